--[[ redrive: move dead letters that are not in flight back to their source
queue, visible at once, with receive_count 0.

KEYS[1]  meta       } the source queue
KEYS[2]  msgs       }
KEYS[3]  vis        }
KEYS[4]  wake       }
KEYS[5]  dlq_meta   } its dead-letter queue (msgs: behind 'R<token>:...|'
KEYS[6]  dlq_msgs   } once received there, see _prelude.lua)
KEYS[7]  dlq_vis    }
KEYS[8]  dlq_why    }
KEYS[9]  gm         } a FIFO source's waiting messages, ready groups and
KEYS[10] gr         } groups in flight: a dead letter goes back to its group
KEYS[11] gf         } (from its record), in its place by its id (send order)
KEYS[12] dlq_index  zset: the dead-letter queue's FIFO dead letters by id

ARGV[1] the most messages to look at in this call, 1..1000 (the client calls
        again until a call looks at fewer, so no single call blocks the server
        for long)
ARGV[2] a FIFO source's cursor: the last id the previous call looked at ('')

Reply: {moved, looked at, cursor for the next call}.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dlq_meta_key, dlq_msgs_key, dlq_vis_key, dlq_why_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local chunk = arg_int(ARGV[1], 1, 1000)
if not chunk then return bad_arg('chunk', 'an integer from 1 to 1000') end
if ARGV[2] and ARGV[2] ~= '' and not (#ARGV[2] <= 20 and string.find(ARGV[2], '^%d+$')) then
  return bad_arg('cursor', "'' or a message id")
end

local cfg = redis.call('HMGET', meta_key, 'vt', 'fifo')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local fifo = cfg[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if fifo then
  -- In id order (send order) from the dead-letter queue's index of its FIFO
  -- dead letters (KEYS[12]: members are ids, ordered by lex), after the
  -- cursor: a receive between two calls never sees a later message of a group
  -- back before an earlier one. One in flight in the dead-letter queue stays.
  local dlq_index = KEYS[12]
  local cursor = ARGV[2] or ''
  local ids = redis.call('ZRANGE', dlq_index, cursor == '' and '-' or ('(' .. cursor), '+', 'BYLEX', 'LIMIT', 0, chunk)
  if #ids == 0 then return {0, 0, ''} end
  local msgs = redis.call('HMGET', dlq_msgs_key, unpack(ids))
  local whys = redis.call('HMGET', dlq_why_key, unpack(ids))
  local scores = redis.call('ZMSCORE', dlq_vis_key, unpack(ids))
  local h, w, groups, moved, drop = {}, {}, {}, {}, {}
  for i, id in ipairs(ids) do
    if not msgs[i] then
      drop[#drop + 1] = id -- deleted or expired there since: forget it
    elseif not (scores[i] and tonumber(scores[i]) > now) then
      -- the group its record kept; one without a group becomes a group of its own
      local len, p = string.match(whys[i] or '', '^%d+~(%d+):()')
      local group = p and string.sub(whys[i], p, p + tonumber(len) - 1) or id
      h[#h + 1] = id
      h[#h + 1] = string.format('D%d', now) .. fifo_tail(group) .. string.sub(msgs[i], header_end(msgs[i]) + 1)
      w[#w + 1] = 0
      w[#w + 1] = fifo_prefix(group) .. id
      groups[group] = true
      moved[#moved + 1] = id
      drop[#drop + 1] = id
    end
  end
  if #drop > 0 then redis.call('ZREM', dlq_index, unpack(drop)) end
  if #moved > 0 then
    redis.call('ZREM', dlq_vis_key, unpack(moved))
    redis.call('HDEL', dlq_msgs_key, unpack(moved))
    redis.call('HDEL', dlq_why_key, unpack(moved))
    redis.call('HSET', msgs_key, unpack(h))
    redis.call('ZADD', KEYS[9], unpack(w))
    for group in pairs(groups) do fifo_settle(KEYS[9], KEYS[10], KEYS[11], group) end
    if redis.call('LLEN', wake_key) == 0 then redis.call('RPUSH', wake_key, 1) end
  end
  return {#moved, #ids, ids[#ids]}
end
local ids = redis.call('ZRANGE', dlq_vis_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, chunk)
if #ids == 0 then
  return {0, 0, ''}
end
local msgs = redis.call('HMGET', dlq_msgs_key, unpack(ids))
local h, z = {}, {}
local since = string.format('D%d|', now) -- its retention starts again now (receive.lua)
for i, id in ipairs(ids) do
  if msgs[i] then
    h[#h + 1] = id
    h[#h + 1] = since .. string.sub(msgs[i], header_end(msgs[i]) + 1) -- never received there
    z[#z + 1] = now
    z[#z + 1] = id
  end
end
redis.call('ZREM', dlq_vis_key, unpack(ids))
redis.call('HDEL', dlq_msgs_key, unpack(ids))
redis.call('HDEL', dlq_why_key, unpack(ids))
if #h > 0 then
  redis.call('HSET', msgs_key, unpack(h))
  redis.call('ZADD', vis_key, unpack(z))
  if redis.call('LLEN', wake_key) == 0 then redis.call('RPUSH', wake_key, 1) end
end
return {#ids, #ids, ''}
