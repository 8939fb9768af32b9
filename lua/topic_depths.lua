--[[ topic_depths: how many messages each subscription of a topic holds.

KEYS[1..n] the subscriptions' msgs hashes

Reply: {count, ...} in the order of KEYS.
]]
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HLEN', KEYS[i]) end
return out
