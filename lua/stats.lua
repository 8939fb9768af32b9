--[[ stats: counts and counters of one queue, read-only.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> stored message, behind 'R<token>:...|' once received
KEYS[3] vis    zset: id -> visible-at
KEYS[4] dlq_vis zset: the dead-letter queue's index (its size is 'dead')

Reply: {visible, in_flight, delayed, oldest_sent_at or -1, now,
        {meta field, value, ...}, dead}
In flight = hidden and received before; delayed = hidden, never received.
Cost is O(log n + hidden messages): each hidden one's header is read.
Errors: RQ_NOQUEUE.
]]
local meta_key, msgs_key, vis_key = KEYS[1], KEYS[2], KEYS[3]
local meta = redis.call('HGETALL', meta_key)
if #meta == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = redis.call('ZCARD', vis_key)
local visible = redis.call('ZCOUNT', vis_key, '-inf', now)
local in_flight = 0
local hidden = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE')
for i = 1, #hidden, 1000 do
  local chunk = {unpack(hidden, i, math.min(i + 999, #hidden))}
  for _, m in ipairs(redis.call('HMGET', msgs_key, unpack(chunk))) do
    if m and string.byte(m, 1) == 82 then in_flight = in_flight + 1 end -- 'R': received
  end
end
-- The oldest message is among the first by visible-at; ids grow with send
-- time, so the smallest id there is the oldest one sent.
local oldest = -1
local head = redis.call('ZRANGE', vis_key, 0, 9)
if #head > 0 then
  local msgs = redis.call('HMGET', msgs_key, unpack(head))
  for _, m in ipairs(msgs) do
    if m then
      local h = header_end(m)
      local s = tonumber(string.sub(m, h + 1, h + 13))
      if oldest < 0 or s < oldest then oldest = s end
    end
  end
end
return {visible, in_flight, total - visible - in_flight, oldest, now, meta,
  redis.call('ZCARD', KEYS[4])}
