-- Presence of one channel (see presence.rs). KEYS: entries (sorted set:
-- member `["<node>","<user>"]` as JSON, score = ms deadline) and counts
-- (hash: user -> how many nodes hold an entry). Both share the channel's
-- hash tag, so one call touches one Cluster slot.
-- ARGV: mode (`join`, `leave` or `read`), node, timeout (ms), topic, app,
-- channel, then the users (for `join` and `leave`).
-- Every call first removes up to 1000 entries past their deadline (their
-- node stopped refreshing them); a user with no entry left has left. The
-- transitions of the call (a user's first entry, or last one gone) are
-- PUBLISHed in one message on the presence topic, in the order Redis runs
-- the calls, so every node sees them in one order.
local entries, counts = KEYS[1], KEYS[2]
local mode, node, timeout = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local joined, left = {}, {}

local function drop(member, user)
  if redis.call('ZREM', entries, member) == 1 then
    if redis.call('HINCRBY', counts, user, -1) <= 0 then
      redis.call('HDEL', counts, user)
      left[#left + 1] = user
    end
  end
end

local expired = redis.call('ZRANGEBYSCORE', entries, '-inf', now, 'LIMIT', 0, 1000)
for _, member in ipairs(expired) do
  local ok, entry = pcall(cjson.decode, member)
  if ok and type(entry) == 'table' and type(entry[2]) == 'string' then
    drop(member, entry[2])
  else
    redis.call('ZREM', entries, member)
  end
end

for i = 7, #ARGV do
  local user = ARGV[i]
  local member = cjson.encode({node, user})
  if mode == 'leave' then
    drop(member, user)
  elseif mode == 'join' then
    if redis.call('ZADD', entries, now + timeout, member) == 1 then
      if redis.call('HINCRBY', counts, user, 1) == 1 then
        joined[#joined + 1] = user
      end
    end
  end
end

-- Forgotten when every node is gone: live nodes call at least every
-- third of the timeout.
if redis.call('EXISTS', entries) == 1 then
  redis.call('PEXPIRE', entries, timeout * 3)
  redis.call('PEXPIRE', counts, timeout * 3)
end

if #joined > 0 or #left > 0 then
  local message = {app = ARGV[5], channel = ARGV[6]}
  if #joined > 0 then message.joined = joined end
  if #left > 0 then message.left = left end
  redis.call('PUBLISH', ARGV[4], cjson.encode(message))
end

if mode == 'read' then
  return redis.call('HKEYS', counts)
end
return 0
