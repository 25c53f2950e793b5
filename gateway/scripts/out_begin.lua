--! include lib/gcra.lua
-- KEYS: cmd, lease, pace; ARGV: entry, now, mode, node, interval (us), burst tolerance (us)
local entry, now, mode, node = unpack(ARGV, 1, 4)
if redis.call('GET', KEYS[2]) ~= node then return {-1, 0} end
local s = redis.call('HMGET', KEYS[1], 'entry', 'done')
if s[2] or (s[1] and s[1] ~= entry) then return {0, 0} end
if mode ~= 'send' then return {1, 0} end
redis.call('HSET', KEYS[1], 'state', 'sending', 'updated_at', now)
redis.call('HDEL', KEYS[1], 'next_attempt_at')
local a = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {a, gcra(KEYS[3], tonumber(ARGV[5]), tonumber(ARGV[6]), 0)}
