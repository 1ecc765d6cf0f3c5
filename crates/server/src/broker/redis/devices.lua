-- Which nodes hold each device of one app, and when the cluster last saw
-- it (see devices.rs). KEYS, one hash tag:
--   held: sorted set, member `["<node>","<device>"]` (JSON), score = ms deadline
--   holders: hash, device -> how many nodes hold it
--   speakers: hash, device -> how many of those find it online (not silent)
--   quiet: set of the `held` members whose node finds the device silent
--   seen: sorted set, device -> its last sign of life (ms) on any node
-- ARGV: mode (`record`, `refresh` or `lookup`), node, timeout (ms), cap
-- (most devices kept in `seen`: the least recently seen go first), then:
--   record: triples op (`take`, `release`, `quiet`, `speak`), device,
--     last seen; answers per triple the device's new state for the whole
--     cluster: 0 unchanged, 1 online, 2 silent, 3 offline.
--   refresh: triples device, `o` (online here) or `s` (silent here), last
--     seen: renews the node's entries (any it had lost come back:
--     answered as `back` when that changes the device for the cluster),
--     then removes up to 1000 entries past their deadline (their node
--     stopped refreshing): devices left with no holder are answered as
--     `gone`, those left with silent holders only as `quieted`. Reply:
--     {gone, back, quieted}.
--   lookup: one device; reply {other holders, last seen or -1}.
-- No expiry on these keys: they must outlive every node, so that nodes
-- started after a whole-cluster crash declare its devices offline.
local held, holders, speakers, quiet, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mode, node, timeout, cap = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local UNCHANGED, ONLINE, SILENT, OFFLINE = 0, 1, 2, 3

local function member_of(device)
  return cjson.encode({node, device})
end

-- Adds `by` to the device's count in `hash`; a count at 0 is removed.
local function count(hash, device, by)
  local n = redis.call('HINCRBY', hash, device, by)
  if n <= 0 then redis.call('HDEL', hash, device) end
  return n
end

-- Remembers a later sign of life of the device.
local function note(device, last_seen)
  local at = tonumber(last_seen)
  if not at or at <= 0 then return end
  local known = tonumber(redis.call('ZSCORE', seen, device))
  if not known or known < at then redis.call('ZADD', seen, at, device) end
end

local function speak(member, device)
  if redis.call('SREM', quiet, member) == 1 and count(speakers, device, 1) == 1 then
    return ONLINE
  end
  return UNCHANGED
end

local function hush(member, device)
  if redis.call('SADD', quiet, member) == 1 and count(speakers, device, -1) == 0 then
    return SILENT
  end
  return UNCHANGED
end

-- This node holds the device, online or silent here.
local function take(device, silent)
  local member = member_of(device)
  if redis.call('ZADD', held, now + timeout, member) == 0 then
    if silent then return hush(member, device) end
    return speak(member, device)
  end
  local first = count(holders, device, 1) == 1
  if silent then
    redis.call('SADD', quiet, member)
    if first then return SILENT end
    return UNCHANGED
  end
  redis.call('SREM', quiet, member)
  if count(speakers, device, 1) == 1 then return ONLINE end
  return UNCHANGED
end

local function release(member, device)
  if redis.call('ZREM', held, member) == 0 then return UNCHANGED end
  local was_quiet = redis.call('SREM', quiet, member) == 1
  if count(holders, device, -1) <= 0 then
    redis.call('HDEL', speakers, device)
    return OFFLINE
  end
  if not was_quiet and count(speakers, device, -1) == 0 then return SILENT end
  return UNCHANGED
end

local function trim()
  local extra = redis.call('ZCARD', seen) - cap
  if extra > 0 then redis.call('ZPOPMIN', seen, extra) end
end

if mode == 'lookup' then
  local device = ARGV[5]
  local others = tonumber(redis.call('HGET', holders, device) or 0)
  if redis.call('ZSCORE', held, member_of(device)) then others = others - 1 end
  local last = redis.call('ZSCORE', seen, device)
  return {math.max(others, 0), last and tonumber(last) or -1}
end

if mode == 'refresh' then
  local gone, back, quieted = {}, {}, {}
  for i = 5, #ARGV - 2, 3 do
    local device, silent = ARGV[i], ARGV[i + 1] == 's'
    note(device, ARGV[i + 2])
    local member = member_of(device)
    if redis.call('ZSCORE', held, member) then
      redis.call('ZADD', held, now + timeout, member)
    elseif take(device, silent) ~= UNCHANGED then
      back[#back + 1] = device
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, 1000)
  for _, member in ipairs(expired) do
    local ok, entry = pcall(cjson.decode, member)
    if ok and type(entry) == 'table' and type(entry[2]) == 'string' then
      local changed = release(member, entry[2])
      if changed == OFFLINE then
        gone[#gone + 1] = entry[2]
      elseif changed == SILENT then
        quieted[#quieted + 1] = entry[2]
      end
    else
      redis.call('ZREM', held, member)
    end
  end
  trim()
  return {gone, back, quieted}
end

local states = {}
for i = 5, #ARGV - 2, 3 do
  local op, device = ARGV[i], ARGV[i + 1]
  note(device, ARGV[i + 2])
  local member = member_of(device)
  local changed
  if op == 'take' then
    changed = take(device, false)
  elseif op == 'release' then
    changed = release(member, device)
  elseif redis.call('ZSCORE', held, member) then
    if op == 'quiet' then changed = hush(member, device) else changed = speak(member, device) end
  elseif op == 'speak' then
    -- The lease was lost meanwhile (another node declared it offline).
    changed = take(device, false)
  else
    changed = UNCHANGED
  end
  states[#states + 1] = changed
end
trim()
return states
