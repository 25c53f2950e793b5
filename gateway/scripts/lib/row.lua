-- One row of the conversation list: {conv hash, contact fields (id, external_id, name,
-- username, phone, status)}.
local function row(P, org, cv)
  local ck = P .. 'conv:{' .. org .. '}:' .. cv
  local cid = redis.call('HGET', ck, 'contact_id')
  local ct = {}
  if cid then
    ct = redis.call('HMGET', P .. 'contact:{' .. org .. '}:' .. cid, 'id', 'external_id', 'name', 'username', 'phone', 'status')
  end
  return {redis.call('HGETALL', ck), ct}
end
