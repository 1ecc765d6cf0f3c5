-- Reads what a subscriber needs to join, in one consistent step.
-- ARGV: candidate epoch, mode ('since', 'snapshot' or 'none'), client's
-- epoch, client's offset, history ttl ms, key ttl ms.
-- Returns {epoch, top, first retained offset, items...}: with 'since', the
-- history entries after the client's offset (when its epoch is current and
-- history reaches back); with 'snapshot', the kept state; each item is
-- `<offset> <body>`. The gateway decides gap or replay from the numbers.
local epoch = epoch_of(ARGV[1])
local top = tonumber(redis.call('HGET', meta, 'top'))
trim_by_age(tonumber(ARGV[5]), now_ms())
touch(tonumber(ARGV[6]))
local first = top + 1
local oldest = redis.call('XRANGE', hist, '-', '+', 'COUNT', 1)
if #oldest > 0 then
  first = offset_of(oldest[1][1])
end
local out = { epoch, top, first }
if ARGV[2] == 'since' then
  local since = tonumber(ARGV[4])
  if ARGV[3] == epoch and since ~= nil and since < top and since + 1 >= first then
    for _, e in ipairs(redis.call('XRANGE', hist, (since + 1) .. '-0', '+')) do
      out[#out + 1] = offset_of(e[1]) .. ' ' .. e[2][4]
    end
  end
elseif ARGV[2] == 'snapshot' then
  local kv = redis.call('HGETALL', state)
  for i = 2, #kv, 2 do
    out[#out + 1] = kv[i]
  end
end
return out
