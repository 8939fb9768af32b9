--[[ delete: delete received messages, each only by its latest receipt.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> message
KEYS[3] vis    zset: id -> visible-at
KEYS[4] state  hash: id -> '<token>:<receive_count>:<first_received_at>'
KEYS[5] why    hash: id -> dead-letter record (dead-letter queues)

ARGV[1..2n] id, token pairs taken from the receipts

Reply: one integer per receipt: 1 deleted, 0 stale or unknown receipt.
Errors: RQ_NOQUEUE.
]]
local meta_key, msgs_key, vis_key, state_key, why_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

if redis.call('EXISTS', meta_key) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local n = #ARGV / 2
local ids = {}
for i = 1, n do ids[i] = ARGV[2 * i - 1] end
local states = redis.call('HMGET', state_key, unpack(ids))
local out, hit, seen = {}, {}, {}
for i = 1, n do
  local st, id = states[i], ids[i]
  local prefix = ARGV[2 * i] .. ':'
  if st and not seen[id] and string.sub(st, 1, #prefix) == prefix then
    out[i] = 1
    hit[#hit + 1] = id
    seen[id] = true
  else
    out[i] = 0
  end
end
if #hit > 0 then
  redis.call('ZREM', vis_key, unpack(hit))
  redis.call('HDEL', msgs_key, unpack(hit))
  redis.call('HDEL', state_key, unpack(hit))
  redis.call('HDEL', why_key, unpack(hit))
  redis.call('HINCRBY', meta_key, 'deleted_total', #hit)
end
return out
