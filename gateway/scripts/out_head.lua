--! include lib/pad.lua
--! include lib/keys.lua
--! include lib/head.lua
-- KEYS: cq, cqd, lease; ARGV: node, lease ms, mark, mark inclusive, prefix, org, conversation
return head(KEYS[1], KEYS[2], KEYS[3], unpack(ARGV, 1, 7))
