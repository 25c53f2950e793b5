--! include lib/pad.lua
--! include lib/inbox.lua
local id, entry, raw, reason, code, ev, maxlen, ttl, rcode, now, st, did =
  unpack(ARGV, 1, 12)
local P, org, cv, mtype, preview, author, at = unpack(ARGV, 13, 19)
if ev ~= '' then
  local eid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', ev)
  if cv ~= '' then
    SBX.item(P, org, cv, ev, eid, 'out', 'outbound', mtype, preview, at, at, author, '', maxlen)
  end
end
local key = KEYS[1]
redis.call('HSET', key, 'done', 'failed', 'state', 'failed', 'reason', rcode,
           'error_code', code, 'error_message', reason, 'error_status', st,
           'error_at', now, 'failed_at', now, 'dead_id', did, 'cmd', raw,
           'updated_at', now)
redis.call('HDEL', key, 'next_attempt_at')
redis.call('EXPIRE', key, ttl)
redis.call('ZADD', KEYS[5], now, id)
redis.call('EXPIRE', KEYS[5], ttl)
local m = pad(entry)
redis.call('ZREM', KEYS[2], m)
redis.call('HDEL', KEYS[3], m)
return 1
