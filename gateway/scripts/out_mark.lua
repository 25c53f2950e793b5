local p = redis.call('XPENDING', KEYS[1], ARGV[1])
if p[1] > 0 then return {p[2], '0'} end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if g[2] == ARGV[1] then
    for i = 1, #g, 2 do
      if g[i] == 'last-delivered-id' then return {g[i + 1], '1'} end
    end
  end
end
return {'', '1'}
