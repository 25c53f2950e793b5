-- Key names of an org's hash slot, the rule of gateway/keys.c (sb_key_org):
-- {prefix}{kind}:{org} and {prefix}{kind}:{org}:{rest}. A script that finds keys on its
-- way (a binding's, a contact's) names them with this, and only keys of the org's slot.
--   local K = SBK(P, org); K('connection', id); K('org', 'connections'); K('seq')
local function SBK(P, org)
  local tag = ':{' .. org .. '}'
  return function(kind, rest)
    if rest == nil or rest == '' then return P .. kind .. tag end
    return P .. kind .. tag .. ':' .. rest
  end
end
