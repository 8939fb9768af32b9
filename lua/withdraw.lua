--[[ withdraw: a request's sender gave up waiting; settle its message.

KEYS[1] meta      hash: attributes and counters
KEYS[2] msgs      hash: id -> stored message, behind 'R<token>:...|' once
                  received (see _prelude.lua)
KEYS[3] vis       zset: id -> visible-at
KEYS[4] reply     list: the request's reply key
KEYS[5] dlq_why   hash: the dead-letter queue's records
KEYS[6] gm        } a FIFO queue's waiting messages, ready groups and groups
KEYS[7] gr        } in flight: a withdrawn message leaves its group's line
KEYS[8] gf        }

ARGV[1] the message id

If the reply arrived meanwhile it is taken (the request succeeds after all).
Else a message no consumer has received is deleted (counted as deleted). A
message in flight stays, but loses its request flag, so its reply is never
pushed: nothing is left behind.
Reply: {'reply', <payload>} | {'withdrawn'} | {'in_flight'} |
       {'dead', '<dead_at>|<reason>|<detail>'} | {'gone'} (deleted or purged).
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, reply_key, dlq_why_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
if not (id and #id <= 20 and string.find(id, '^%d+$')) then
  return bad_arg('message_id', 'a message id (1 to 20 digits)')
end

local got = redis.call('LPOP', reply_key)
if got then
  redis.call('DEL', reply_key)
  return {'reply', got}
end
if redis.call('EXISTS', meta_key) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local msg = redis.call('HGET', msgs_key, id)
if msg then
  local h = header_end(msg)
  if string.byte(msg, 1) ~= 82 then -- never received ('R')
    local _, group = fifo_parts(msg)
    if group then
      redis.call('ZREM', KEYS[6], fifo_prefix(group) .. id)
      if redis.call('ZSCORE', KEYS[7], group) then fifo_settle(KEYS[6], KEYS[7], KEYS[8], group) end
    end
    redis.call('ZREM', vis_key, id)
    redis.call('HDEL', msgs_key, id)
    redis.call('HINCRBY', meta_key, 'deleted_total', 1)
    return {'withdrawn'}
  end
  -- received: without its flag, deleting it pushes no reply (delete.lua)
  if string.byte(msg, h + 14) == 63 then
    redis.call('HSET', msgs_key, id, string.sub(msg, 1, h + 13) .. string.sub(msg, h + 15))
  end
  return {'in_flight'}
end
local why = redis.call('HGET', dlq_why_key, id)
if why then
  return {'dead', why}
end
return {'gone'}
