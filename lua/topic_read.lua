--[[ topic_read: the subscriptions of a topic, read atomically with the
version that publish checks.

KEYS[1] subs     zset: subscription name -> expires-at (ms)
KEYS[2] version  string: bumped whenever the set of subscriptions changes

Reply: {version, {name, expires_at, ...}, now}.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('GET', KEYS[2]) or '0', redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), now}
