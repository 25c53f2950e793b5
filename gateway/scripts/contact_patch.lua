--! include lib/keys.lua
--! include lib/inbox.lua
local P, org, id, status, now = unpack(ARGV, 1, 5)
local K = SBK(P, org)
local key = K('contact', id)
local c = redis.call('HMGET', key, 'org', 'status', 'created_at')
if c[1] ~= org then return false end
if c[2] ~= status then
  redis.call('ZREM', K('org', 'contacts:' .. c[2]), id)
  local score = redis.call('ZSCORE', K('org', 'contacts'), id) or c[3]
  redis.call('ZADD', K('org', 'contacts:' .. status), score, id)
  redis.call('HSET', key, 'status', status, 'updated_at', now)
  SBX.contact_status(P, org, id, c[2], status)
end
return redis.call('HGETALL', key)
