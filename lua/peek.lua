--[[ peek: read up to N messages of a queue without receiving them (read-only).

Used by `rqueue dlq` to show dead letters and why they died: unlike receive,
it hides nothing, bumps no receive count and issues no receipt.

KEYS[1] meta   hash: the queue's attributes (its existence check)
KEYS[2] msgs   hash: id -> stored message, behind 'R<token>:<receive_count>:
               <first_received_at>[:<visible_since>]|' once received
KEYS[3] vis    zset: id scored by visible-at (ms)
KEYS[4] why    hash: id -> '<dead_at>|<reason>|<detail>' (dead-letter queues)

ARGV[1] the most messages to return (1..1000), ordered by visible-at

Reply: {ids, stored messages without their header, receive counts (0 if
never received), whys ('' if none), visible-at scores, now}.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, why_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local max = arg_int(ARGV[1], 1, 1000)
if not max then return bad_arg('max_messages', 'an integer from 1 to 1000') end

if redis.call('EXISTS', meta_key) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('ZRANGE', vis_key, 0, max - 1, 'WITHSCORES')
local ids, scores = {}, {}
for i = 1, #flat, 2 do
  ids[#ids + 1] = flat[i]
  scores[#scores + 1] = flat[i + 1]
end
if #ids == 0 then
  return {{}, {}, {}, {}, {}, now}
end
local stored = redis.call('HMGET', msgs_key, unpack(ids))
local counts = {}
local whys = redis.call('HMGET', why_key, unpack(ids))
for i = 1, #ids do
  local m = stored[i] or ''
  local h = header_end(m)
  counts[i] = h > 0 and tonumber(string.match(m, '^R%d+:(%d+)')) or 0
  stored[i] = string.sub(m, h + 1)
  whys[i] = whys[i] or ''
end
return {ids, stored, counts, whys, scores, now}
