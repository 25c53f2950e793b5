local entry, now, nexta, code, msg, st = unpack(ARGV, 1, 6)
local s = redis.call('HMGET', KEYS[1], 'entry', 'done')
if s[2] or s[1] ~= entry then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'next_attempt_at', nexta, 'error_code',
           code, 'error_message', msg, 'error_status', st, 'error_at', now, 'updated_at',
           now)
return 1
