-- Gives each event the channel's next offset, appends it to history and
-- state, and publishes it to the channel's topic, all in one step: nodes
-- never share an offset and every node sees a channel in offset order.
-- ARGV: candidate epoch, history length, keep state (1/0), max state keys,
-- history ttl ms, key ttl ms, topic, dedup window ms, then per event:
-- dedup id ('' for none), key ('' for none), body.
-- Returns {epoch, error ('' or 'state_full'), offset...}, where an event
-- whose id was published within the window gets minus the first one's
-- offset and publishes nothing; an error stops the batch after the events
-- before it.
local epoch = epoch_of(ARGV[1])
local history = tonumber(ARGV[2])
local keep = ARGV[3] == '1'
local max_keys = tonumber(ARGV[4])
local topic = ARGV[7]
local now = now_ms()
local top = tonumber(redis.call('HGET', meta, 'top'))
local out = { epoch, '' }
local deduplicated = false
for i = 9, #ARGV - 2, 3 do
  local id, key, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local prior = id ~= '' and redis.call('HGET', seenoff, id)
  if prior then
    out[#out + 1] = -tonumber(prior)
  else
    local keeps = keep and key ~= ''
    if keeps and redis.call('HEXISTS', state, key) == 0
        and redis.call('HLEN', state) >= max_keys then
      out[2] = 'state_full'
      break
    end
    top = top + 1
    -- XADD first: it is the step that can fail, before anything is changed.
    if history > 0 then
      redis.call('XADD', hist, 'MAXLEN', history, top .. '-0', 't', now, 'b', body)
    end
    if keeps then
      redis.call('HSET', state, key, top .. ' ' .. body)
    end
    redis.call('HSET', meta, 'top', top)
    redis.call('PUBLISH', topic, epoch .. ' ' .. top .. ' ' .. now .. ' ' .. body)
    if id ~= '' then
      redis.call('ZADD', seen, now, id)
      redis.call('HSET', seenoff, id, top)
      deduplicated = true
    end
    out[#out + 1] = top
  end
end
trim_by_age(tonumber(ARGV[5]), now)
if deduplicated then
  -- Forget ids older than the window, a bounded number per publish.
  local old = redis.call('ZRANGEBYSCORE', seen, '-inf', now - tonumber(ARGV[8]), 'LIMIT', 0, 1000)
  if #old > 0 then
    redis.call('ZREM', seen, unpack(old))
    redis.call('HDEL', seenoff, unpack(old))
  end
end
touch(tonumber(ARGV[6]))
return out
