-- Whether the conversation's history item (SBX.item, lib/inbox.lua) can be written by
-- this script: always on a single Redis; on a Cluster node that does not serve the
-- conversation's hashes, the send is recorded without the item rather than not at all.
local function item_ok(P, cv)
  if cv == '' then return false end
  local ok, cid = pcall(redis.call, 'HGET', P .. 'conv:' .. cv, 'contact_id')
  if not ok then return false end
  if cid then return (pcall(redis.call, 'EXISTS', P .. 'contact:' .. cid)) end
  return true
end
