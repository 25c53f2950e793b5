--! include lib/pad.lua
--! include lib/inbox.lua
local n, msgid, last, ev, entry, maxlen, ttl, now = unpack(ARGV, 1, 8)
local P, org, cv, mtype, preview, author, at = unpack(ARGV, 9, 15)
local key = KEYS[1]
local m = pad(entry)
if redis.call('HGET', key, 'done') == 'cancelled' then
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
  return 1
end
redis.call('HSET', key, 'part:' .. n, msgid, 'parts', n, 'updated_at', now)
if ev ~= '' then
  local eid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', ev)
  if cv ~= '' then
    SBX.item(P, org, cv, ev, eid, 'out', 'outbound', mtype, preview, at, at, author, msgid, maxlen)
  end
end
if last == '1' then
  redis.call('HSET', key, 'done', 'sent', 'state', 'sent', 'sent_at', now)
  redis.call('HDEL', key, 'next_attempt_at')
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
end
redis.call('EXPIRE', key, ttl)
return 1
