--[[ reject: move received messages to the dead-letter queue at once, with a
reason a person can read, each only by its latest receipt.

KEYS[1]  meta       } the queue (msgs: stored messages, behind 'R<token>:...|'
KEYS[2]  msgs       } once received, see _prelude.lua)
KEYS[3]  vis        }
KEYS[4]  dlq_meta   } its dead-letter queue
KEYS[5]  dlq_msgs   }
KEYS[6]  dlq_vis    }
KEYS[7]  dlq_why    }
KEYS[8]  dlq_wake   }
KEYS[9]  wake       } the queue's wake list, and a FIFO queue's waiting
KEYS[10] gm         } messages, ready groups and groups in flight (untouched
KEYS[11] gr         } unless meta says fifo): a rejected message frees its
KEYS[12] gf         } group, and its dead-letter record keeps the group
KEYS[13] dlq_index  zset: the dead-letter queue's FIFO dead letters by id
KEYS[14..] reply keys (lists), one per request receipt ('r' below), in order

ARGV[1] the reason (free text, kept as the dead letter's detail)
ARGV[2] the queue's events channel
ARGV[3] reply key TTL in ms
ARGV[4..] id, token, tracked triples taken from the receipts; tracked is ''
          (untracked), 'r' (a request: RPUSH 'drejected|<reason>' on its
          reply key) or 'e' (publish 'dead_lettered|<id>|rejected|<reason>')

A request's dead letter is stored without its flag: its sender has heard.
Reply: one integer per receipt: 1 dead-lettered, 0 stale or unknown receipt.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key = KEYS[1], KEYS[2], KEYS[3]
local dlq_meta_key, dlq_msgs_key, dlq_vis_key, dlq_why_key, dlq_wake_key = KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local reason, channel, ttl = ARGV[1], ARGV[2], ARGV[3]

local n = (#ARGV - 3) / 3
if n < 1 or n % 1 ~= 0 then return bad_arg('receipts', '1 or more id, token, tracked triples') end
if not arg_int(ttl, 1, 86400000) then return bad_arg('reply_ttl', 'an integer from 1 to 86400000 (ms)') end
local ids, requests = {}, 0
for i = 1, n do
  ids[i] = ARGV[3 * i + 1]
  local tracked = ARGV[3 * i + 3]
  if tracked == 'r' then
    requests = requests + 1
  elseif tracked ~= '' and tracked ~= 'e' then
    return bad_arg('receipts', "tracked must be '', 'r' or 'e'")
  end
end
if requests ~= #KEYS - 13 then return bad_arg('receipts', 'one reply key per request receipt') end

local cfg = redis.call('HMGET', meta_key, 'vt', 'fifo')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local fifo = cfg[2] == '1'
local gm_key, gr_key, gf_key = KEYS[10], KEYS[11], KEYS[12]
local ready, touched = false, {}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local msgs = redis.call('HMGET', msgs_key, unpack(ids))
local out, hit, seen = {}, {}, {}
local k = 13
for i = 1, n do
  local id, msg = ids[i], msgs[i]
  local prefix = 'R' .. ARGV[3 * i + 2] .. ':'
  local tracked = ARGV[3 * i + 3]
  if tracked == 'r' then k = k + 1 end
  if msg and not seen[id] and string.sub(msg, 1, #prefix) == prefix then
    out[i] = 1
    seen[id] = true
    hit[#hit + 1] = id
    local at = string.format('%d', now)
    local _, group = fifo_parts(msg)
    if fifo and group then
      at = at .. '~' .. #group .. ':' .. group
      redis.call('ZADD', KEYS[13], 0, id)
      if redis.call('ZREM', vis_key, id) == 1 then
        fifo_release(gf_key, group)
      else
        redis.call('ZREM', gm_key, fifo_prefix(group) .. id)
      end
      touched[group] = true
    end
    msg = string.sub(msg, header_end(msg) + 1) -- a dead letter starts unreceived
    if string.byte(msg, 14) == 63 then -- a request: drop the flag
      msg = string.sub(msg, 1, 13) .. string.sub(msg, 15)
      -- (a sender that gave up took the flag already: withdraw.lua)
      if tracked == 'r' then
        redis.call('RPUSH', KEYS[k], 'drejected|' .. reason)
        redis.call('PEXPIRE', KEYS[k], ttl)
      end
    elseif tracked == 'e' then
      redis.call('PUBLISH', channel, 'dead_lettered|' .. id .. '|rejected|' .. reason)
    end
    redis.call('HSET', dlq_msgs_key, id, msg)
    redis.call('ZADD', dlq_vis_key, now, id)
    redis.call('HSET', dlq_why_key, id, at .. '|rejected|' .. reason)
  else
    out[i] = 0
  end
end
for group in pairs(touched) do
  if fifo_settle(gm_key, gr_key, gf_key, group) then ready = true end
end
if #hit > 0 then
  redis.call('ZREM', vis_key, unpack(hit))
  redis.call('HDEL', msgs_key, unpack(hit))
  redis.call('HINCRBY', meta_key, 'dead_lettered_total', #hit)
  redis.call('HINCRBY', dlq_meta_key, 'sent_total', #hit)
  if redis.call('LLEN', dlq_wake_key) == 0 then redis.call('RPUSH', dlq_wake_key, 1) end
end
if ready and redis.call('LLEN', KEYS[9]) == 0 then redis.call('RPUSH', KEYS[9], 1) end
return out
