-- Which nodes hold each device of one app (see devices.rs). KEYS: held
-- (sorted set: member `["<node>","<device>"]` as JSON, score = ms deadline)
-- and holders (hash: device -> how many nodes hold it), one hash tag.
-- ARGV: mode (`record` or `refresh`), node, timeout (ms), then for
-- `record` pairs of op (`take` or `release`) and device, for `refresh`
-- the devices the node holds.
-- `record` answers per pair 1 when it changed the device for the whole
-- cluster (first holder, last one gone), else 0.
-- `refresh` first renews the node's entries (any it had lost come back:
-- answered as `back`), then removes up to 1000 entries past their
-- deadline (their node stopped refreshing): devices left with no holder
-- are answered as `gone`. Reply: {gone, back}.
-- No expiry on these keys: they must outlive every node, so that nodes
-- started after a whole-cluster crash declare its devices offline.
local held, holders = KEYS[1], KEYS[2]
local mode, node, timeout = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function take(device)
  local member = cjson.encode({node, device})
  if redis.call('ZADD', held, now + timeout, member) == 1 then
    return redis.call('HINCRBY', holders, device, 1) == 1
  end
  return false
end

local function release(member, device)
  if redis.call('ZREM', held, member) == 1 then
    if redis.call('HINCRBY', holders, device, -1) <= 0 then
      redis.call('HDEL', holders, device)
      return true
    end
  end
  return false
end

if mode == 'refresh' then
  local gone, back = {}, {}
  for i = 4, #ARGV do
    if take(ARGV[i]) then back[#back + 1] = ARGV[i] end
  end
  local expired = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, 1000)
  for _, member in ipairs(expired) do
    local ok, entry = pcall(cjson.decode, member)
    if ok and type(entry) == 'table' and type(entry[2]) == 'string' then
      if release(member, entry[2]) then gone[#gone + 1] = entry[2] end
    else
      redis.call('ZREM', held, member)
    end
  end
  return {gone, back}
end

local flags = {}
for i = 4, #ARGV - 1, 2 do
  local op, device = ARGV[i], ARGV[i + 1]
  local changed
  if op == 'take' then
    changed = take(device)
  else
    changed = release(cjson.encode({node, device}), device)
  end
  flags[#flags + 1] = changed and 1 or 0
end
return flags
