local P = ARGV[1]
local rl = P .. 'ratelimit:' .. ARGV[2]
local now = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', rl, '-inf', now - window)
if redis.call('ZCARD', rl) >= limit then
  local oldest = redis.call('ZRANGE', rl, 0, 0, 'WITHSCORES')
  return {'limited', tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', rl, now, ARGV[6])
redis.call('PEXPIRE', rl, window)
if ARGV[7] == '' then return {'unauthorized'} end
local org = redis.call('HGET', P .. 'apikey:' .. ARGV[7], 'org')
if not org then return {'unauthorized'} end
return {'ok', org}
