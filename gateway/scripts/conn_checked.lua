--! include lib/keys.lua
local P, id, org, ok, tok, hint, code, msg, now = unpack(ARGV, 1, 9)
local key = SBK(P, org)('connection', id)
if redis.call('HGET', key, 'org') ~= org then return false end
redis.call('HSET', key, 'last_checked_at', now)
if ok == '1' then
  redis.call('HSET', key, 'status', 'active')
  if hint ~= '' then redis.call('HSET', key, 'account_hint', hint) end
  redis.call('HDEL', key, 'error_code', 'error_message', 'error_at')
else
  redis.call('HSET', key, 'error_code', code, 'error_message', msg, 'error_at', now)
  if tok == '1' then redis.call('HSET', key, 'status', 'inactive') end
end
return redis.call('HGETALL', key)
