local T, tau, pause = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
if pause > 0 then
  if now + pause + tau > tat then tat = now + pause + tau end
elseif tat - now > tau then
  return math.floor((tat - tau - now) / 1000) + 1
else
  tat = tat + T
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
           math.floor((tat - now) / 1000) + 1000)
return 0
