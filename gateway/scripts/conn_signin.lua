--! include lib/keys.lua
-- A connection found again by a sign-in: its fields updated and its Meta id indexed
-- (metaid:{org}:<provider>, which a connection stored before the index lacks), in one call.
-- ARGV: prefix, org, id, provider, meta id, field, value, ... -> the hash, or nil when the
-- connection is gone or of another org.
local P, org, id, provider, meta = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local K = SBK(P, org)
local key = K('connection', id)
if redis.call('HGET', key, 'org') ~= org then return false end
if #ARGV > 5 then redis.call('HSET', key, unpack(ARGV, 6)) end
if meta ~= '' then redis.call('HSET', K('metaid', provider), meta, id) end
return redis.call('HGETALL', key)
