--[[ purge: delete every message of one queue (not its dead-letter queue),
in flight or not. Attributes and counters stay.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> message
KEYS[3] vis    zset: id -> visible-at
KEYS[4] state  hash: receipt state
KEYS[5] why    hash: dead-letter records
KEYS[6..8] gm, gr, gf: a FIFO queue's groups

Reply: the number of messages deleted.
Errors: RQ_NOQUEUE.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local n = redis.call('HLEN', KEYS[2])
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HDEL', KEYS[1], 'fdl') -- a FIFO queue's last delayed message (send.lua) is gone too
return n
