--[[ reject: move received messages to the dead-letter queue at once, with a
reason a person can read, each only by its latest receipt.

KEYS[1]  meta       } the queue
KEYS[2]  msgs       }
KEYS[3]  vis        }
KEYS[4]  state      }
KEYS[5]  dlq_meta   } its dead-letter queue
KEYS[6]  dlq_msgs   }
KEYS[7]  dlq_vis    }
KEYS[8]  dlq_why    }
KEYS[9]  dlq_wake   }

ARGV[1] the reason (free text, kept as the dead letter's detail)
ARGV[2..2n+1] id, token pairs taken from the receipts

Reply: one integer per receipt: 1 dead-lettered, 0 stale or unknown receipt.
Errors: RQ_NOQUEUE.
]]
local meta_key, msgs_key, vis_key, state_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dlq_meta_key, dlq_msgs_key, dlq_vis_key, dlq_why_key, dlq_wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]

if redis.call('EXISTS', meta_key) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reason = ARGV[1]
local n = (#ARGV - 1) / 2
local ids = {}
for i = 1, n do ids[i] = ARGV[2 * i] end
local states = redis.call('HMGET', state_key, unpack(ids))
local msgs = redis.call('HMGET', msgs_key, unpack(ids))
local out, hit, seen = {}, {}, {}
for i = 1, n do
  local st, id = states[i], ids[i]
  local prefix = ARGV[2 * i + 1] .. ':'
  if st and msgs[i] and not seen[id] and string.sub(st, 1, #prefix) == prefix then
    out[i] = 1
    seen[id] = true
    hit[#hit + 1] = id
    redis.call('HSET', dlq_msgs_key, id, msgs[i])
    redis.call('ZADD', dlq_vis_key, now, id)
    redis.call('HSET', dlq_why_key, id, string.format('%d|rejected|%s', now, reason))
  else
    out[i] = 0
  end
end
if #hit > 0 then
  redis.call('ZREM', vis_key, unpack(hit))
  redis.call('HDEL', msgs_key, unpack(hit))
  redis.call('HDEL', state_key, unpack(hit))
  redis.call('HINCRBY', meta_key, 'dead_lettered_total', #hit)
  redis.call('HINCRBY', dlq_meta_key, 'sent_total', #hit)
  if redis.call('LLEN', dlq_wake_key) == 0 then redis.call('RPUSH', dlq_wake_key, 1) end
end
return out
