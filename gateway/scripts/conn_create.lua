--! include lib/keys.lua
-- The caller has written connorg:{id} (SET NX) before: a webhook finds the org there.
-- A connection of a sign-in (a 'meta_id' field) is indexed by it: metaid:{org}:<provider>.
local P, org, id = ARGV[1], ARGV[2], ARGV[3]
local K = SBK(P, org)
redis.call('HSET', K('connection', id), unpack(ARGV, 6))
for i = 6, #ARGV - 1, 2 do
  if ARGV[i] == 'meta_id' and ARGV[i + 1] ~= '' then
    redis.call('HSET', K('metaid', ARGV[4]), ARGV[i + 1], id)
  end
end
local score = tonumber(ARGV[5]) * 1000 + redis.call('INCR', K('seq')) % 1000
redis.call('ZADD', K('org', 'connections'), score, id)
redis.call('ZADD', K('org', 'connections:' .. ARGV[4]), score, id)
return 1
