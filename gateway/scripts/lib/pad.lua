-- The entry id of a stream zero-padded to 20 digits on each side, so that members of a
-- zset sort like the stream's entries.
local function pad(e)
  local a, b = string.match(e, '^(%d+)-(%d+)$')
  return string.rep('0', 20 - #a) .. a .. '-' .. string.rep('0', 20 - #b) .. b
end
