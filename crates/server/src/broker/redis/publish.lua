-- Gives each event the channel's next offset, appends it to history and
-- state, and publishes it to the channel's topic, all in one step: nodes
-- never share an offset and every node sees a channel in offset order.
-- ARGV: candidate epoch, history length, keep state (1/0), max state keys,
-- history ttl ms, key ttl ms, topic, dedup window ms, flapping changes (0:
-- no rule), flapping window ms, then per event: dedup id ('' for none), key
-- ('' for none), device time ms ('' for none), tracked state value ('' for
-- none), body.
-- A kept key's event whose device time is older than the state's is late:
-- it goes to history and is published with `"late":true` spliced into its
-- body, and the state is left alone. Otherwise devstate remembers the
-- event's device time and, with a tracked value, when it last changed
-- (spliced in as changed_ms and since_change_ms) and its recent changes.
-- Returns {epoch, error ('' or 'state_full'), alarms, offset...}, where an
-- event whose id was published within the window gets minus the first one's
-- offset and publishes nothing; an error stops the batch after the events
-- before it; alarms lists `<event index from 1> started <count> <first ms>
-- <last ms>` or `<event index> cleared` for flapping episodes.
local epoch = epoch_of(ARGV[1])
local history = tonumber(ARGV[2])
local keep = ARGV[3] == '1'
local max_keys = tonumber(ARGV[4])
local topic = ARGV[7]
local flap_changes = tonumber(ARGV[9])
local flap_window = tonumber(ARGV[10])
local now = now_ms()
local top = tonumber(redis.call('HGET', meta, 'top'))
local alarms = {}
local out = { epoch, '', alarms }
local deduplicated = false

local function read_tracked(key)
  local held = redis.call('HGET', devstate, key)
  if not held then
    return nil
  end
  local dev, changed, flapping, changes, value =
    string.match(held, '^(%S+) (%S+) (%S+) (%S+) (.*)$')
  if not dev then
    return nil
  end
  local list = {}
  for c in string.gmatch(changes, '%d+') do
    list[#list + 1] = tonumber(c)
  end
  return { dev = tonumber(dev), changed = tonumber(changed), flapping = flapping == '1',
           changes = list, value = value }
end

local function write_tracked(key, t)
  local changes = '-'
  if #t.changes > 0 then
    changes = table.concat(t.changes, ',')
  end
  redis.call('HSET', devstate, key, (t.dev or '-') .. ' ' .. (t.changed or '-') .. ' '
    .. (t.flapping and '1' or '0') .. ' ' .. changes .. ' ' .. t.value)
end

-- The flapping rule (the same as crates/core/src/device_state.rs).
local function flap(t, changed, at, index)
  local kept = {}
  for _, c in ipairs(t.changes) do
    if c >= at - flap_window then
      kept[#kept + 1] = c
    end
  end
  local quiet = #kept == 0
  if changed then
    kept[#kept + 1] = at
    while #kept > flap_changes + 1 do
      table.remove(kept, 1)
    end
  end
  t.changes = kept
  if t.flapping and quiet then
    t.flapping = false
    alarms[#alarms + 1] = index .. ' cleared'
  elseif not t.flapping and #kept > flap_changes then
    t.flapping = true
    alarms[#alarms + 1] = index .. ' started ' .. #kept .. ' ' .. kept[1] .. ' ' .. at
  end
end

-- Compares a kept key's event with the key's devstate: the fields to
-- splice into its body, whether it is late, and (when not) what devstate
-- is to remember for the key.
local function compare(key, dev, value, index)
  local prior = read_tracked(key)
  if dev and prior and prior.dev and dev < prior.dev then
    return '"late":true,', true, nil
  end
  local t = { dev = dev, changes = {}, flapping = false, value = '' }
  if prior then
    t.changed, t.changes, t.flapping, t.value = prior.changed, prior.changes, prior.flapping, prior.value
  end
  local splice = ''
  if value ~= '' then
    local at = dev or now
    if not prior or prior.value == '' or not prior.changed then
      t.changed = at
      t.changes = {}
      splice = '"changed_ms":' .. at .. ','
    else
      local changed = prior.value ~= value
      if changed then
        t.changed = at
      end
      splice = '"changed_ms":' .. t.changed .. ',"since_change_ms":' .. math.max(0, at - prior.changed) .. ','
      if flap_changes > 0 then
        flap(t, changed, at, index)
      end
    end
    t.value = value
  end
  return splice, false, t
end

local index = 0
for i = 11, #ARGV - 4, 5 do
  index = index + 1
  local id, key, dev, value, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
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
    local late, tracked = false, nil
    if keeps then
      local splice
      splice, late, tracked = compare(key, dev, value, index)
      if splice ~= '' then
        body = '{' .. splice .. string.sub(body, 2)
      end
    end
    -- XADD first: it is the step that can fail, before anything is changed.
    if history > 0 then
      redis.call('XADD', hist, 'MAXLEN', history, top .. '-0', 't', now, 'b', body)
    end
    if keeps and not late then
      redis.call('HSET', state, key, top .. ' ' .. body)
      write_tracked(key, tracked)
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
