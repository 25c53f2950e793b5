--! include lib/keys.lua
-- Whether conversation ARGV[3] exists and is the org's: 1 | 0. The caller then adds the
-- command to sb:out (another slot; a conversation's org never changes).
local P, org, cv = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', SBK(P, org)('conv', cv), 'org') ~= org then return 0 end
return 1
