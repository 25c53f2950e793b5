-- The sliding window of one client address (management API). KEYS[1]: ratelimit:{address}.
-- ARGV: now_ms, limit, window_ms, unique member -> {'limited', retry_ms} | {'ok'}
local rl = KEYS[1]
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', rl, '-inf', now - window)
if redis.call('ZCARD', rl) >= limit then
  local oldest = redis.call('ZRANGE', rl, 0, 0, 'WITHSCORES')
  return {'limited', tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', rl, now, ARGV[4])
redis.call('PEXPIRE', rl, window)
return {'ok'}
