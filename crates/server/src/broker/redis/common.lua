-- Shared head of publish.lua and recover.lua (concatenated before each).
-- KEYS: meta (hash: epoch, top), hist (stream, ids `<offset>-0`, fields
-- t = ms time, b = body), state (hash: key -> `<offset> <body>`), seen
-- (sorted set of idempotency ids published within the dedup window, scored
-- by ms time), seenoff (hash: id -> offset) and devstate (hash: key ->
-- `<device ms> <changed ms> <flapping 0/1> <change ms,...> <value>`, '-'
-- for none, see publish.lua). All six share one hash tag, so a channel
-- lives on one Cluster slot.
local meta, hist, state, seen, seenoff = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local devstate = KEYS[6]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The channel's epoch. A new channel, or one whose keys expired, starts a
-- new epoch with empty history and state: resuming clients get a gap.
local function epoch_of(candidate)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch
  end
  redis.call('DEL', hist, state, seen, seenoff, devstate)
  redis.call('HSET', meta, 'epoch', candidate, 'top', 0)
  return candidate
end

local function offset_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- Drops history entries older than ttl_ms (0: no age limit). Entries are in
-- time order, so the first young one ends the trim.
local function trim_by_age(ttl_ms, now)
  if ttl_ms <= 0 then
    return
  end
  local cutoff = now - ttl_ms
  for _ = 1, 1000 do
    local entries = redis.call('XRANGE', hist, '-', '+', 'COUNT', 100)
    if #entries == 0 then
      return
    end
    for _, e in ipairs(entries) do
      if tonumber(e[2][2]) >= cutoff then
        redis.call('XTRIM', hist, 'MINID', e[1])
        return
      end
    end
    redis.call('XTRIM', hist, 'MINID', (offset_of(entries[#entries][1]) + 1) .. '-0')
  end
end

-- A channel nobody publishes to for key_ttl_ms is forgotten.
local function touch(key_ttl_ms)
  for _, k in ipairs({ meta, hist, state, seen, seenoff, devstate }) do
    redis.call('PEXPIRE', k, key_ttl_ms)
  end
end
