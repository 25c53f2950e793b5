local key = ARGV[1] .. 'connection:' .. ARGV[2]
local ext = ''
local first = redis.call('SRANDMEMBER', key .. ':bindings')
if first then ext = redis.call('HGET', ARGV[1] .. 'binding:' .. first, 'external_id') or '' end
return {redis.call('HGETALL', key), ext}
