-- One admission of the connection's shared GCRA budget (the theoretical arrival time, in
-- microseconds of Redis's clock, in key 'k'): interval 'T' and burst tolerance 'tau' (us);
-- 'pause' > 0 (us) holds every send back that long (Telegram's flood wait).
-- Returns 0 (admitted, or the pause recorded) or the ms to wait.
local function gcra(k, T, tau, pause)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', k) or '0') or 0
  if tat < now then tat = now end
  if pause > 0 then
    if now + pause + tau > tat then tat = now + pause + tau end
  elseif tat - now > tau then
    return math.floor((tat - tau - now) / 1000) + 1
  else
    tat = tat + T
  end
  redis.call('SET', k, string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
  return 0
end
