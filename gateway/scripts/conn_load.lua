--! include lib/keys.lua
local P, id, org = ARGV[1], ARGV[2], ARGV[3]
local K = SBK(P, org)
local key = K('connection', id)
local ext = ''
local first = redis.call('SRANDMEMBER', key .. ':bindings')
if first then ext = redis.call('HGET', K('binding', first), 'external_id') or '' end
return {redis.call('HGETALL', key), ext}
