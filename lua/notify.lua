--[[ notify: tell request senders that their messages were dead-lettered by
a receive (which cannot know their reply keys in advance).

KEYS[1..n] reply keys (lists)
ARGV[1] reply key TTL in ms
ARGV[2..n+1] payloads: 'd<reason>|<detail>'

Reply: n.
Errors: RQ_BADARG.
]]
local ttl = ARGV[1]
if #ARGV ~= #KEYS + 1 then return bad_arg('payloads', 'one per reply key') end
if not arg_int(ttl, 1, 86400000) then return bad_arg('reply_ttl', 'an integer from 1 to 86400000 (ms)') end
for i = 2, #ARGV do
  if string.byte(ARGV[i], 1) ~= 100 then return bad_arg('payloads', "'d<reason>|<detail>' each") end
end
for i = 1, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
