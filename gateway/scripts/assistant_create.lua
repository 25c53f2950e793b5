--! include lib/keys.lua
local P, org, id = ARGV[1], ARGV[2], ARGV[3]
local K = SBK(P, org)
local now, limit, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ck = K('org', 'assistant_creations')
redis.call('ZREMRANGEBYSCORE', ck, '-inf', now - window)
if redis.call('ZCARD', ck) >= limit then
  local oldest = redis.call('ZRANGE', ck, 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
local key = K('assistant', id)
redis.call('HSET', key, 'id', id, 'org', org, 'name', ARGV[7], 'enabled', ARGV[8],
           'created_at', ARGV[4], 'updated_at', ARGV[4])
redis.call('ZADD', K('org', 'assistants'), now * 1000 + redis.call('INCR', K('seq')) % 1000, id)
redis.call('ZADD', ck, now, id)
redis.call('PEXPIRE', ck, window)
return {1, redis.call('HGETALL', key)}
