--[[ notify: tell request senders that their messages were dead-lettered by
a receive (which cannot know their reply keys in advance).

KEYS[1..n] reply keys (lists)
ARGV[1] reply key TTL in ms
ARGV[2..n+1] payloads: 'd<reason>|<detail>'

Reply: n.
]]
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
