-- The consumers of processes that are gone. KEYS[1]: sb:out. ARGV: the group, this
-- process's consumer name, an idle time (ms).
-- -> how many consumers were deleted from the group.
-- A consumer with nothing pending that has not read for longer than the idle time is a
-- process that is gone (a live one reads at least every few seconds); deleting it loses
-- nothing (its pending list is empty, checked in the same atomic call), and a live one
-- would only be made again by its next read. Without this the group keeps one consumer per
-- process that ever ran (the default name is the host name and the pid).
local ok, list = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local idle_ms, n = tonumber(ARGV[3]), 0
for _, c in ipairs(list) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f.name ~= ARGV[2] and tonumber(f.pending) == 0 and tonumber(f.idle) > idle_ms then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f.name)
    n = n + 1
  end
end
return n
