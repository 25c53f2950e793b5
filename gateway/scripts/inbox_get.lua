--! include lib/row.lua
local P, org, cv = ARGV[1], ARGV[2], ARGV[3]
local c = redis.call('HMGET', P .. 'conv:{' .. org .. '}:' .. cv, 'org', 'listed')
if c[1] ~= org or not c[2] then return false end
return row(P, org, cv)
