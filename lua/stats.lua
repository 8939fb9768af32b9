--[[ stats: counts and counters of one queue, read-only.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> stored message, behind 'R<token>:...|' once received
KEYS[3] vis    zset: id -> visible-at (received: - 0.5, see receive.lua)
KEYS[4] dlq_vis zset: the dead-letter queue's index (its size is 'dead')
KEYS[5..7] gm, gr, gf: a FIFO queue's waiting messages (visible), ready groups
        and groups in flight

Reply: {visible, in_flight, delayed, oldest_sent_at or -1, now,
        {meta field, value, ...}, dead, groups, groups_in_flight}
(groups: a FIFO queue's groups with a message visible or in flight).
In flight = hidden and received before; delayed = hidden, never received.
Cost is O(log n + hidden messages): their scores are read.
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
-- A received message is scored half a ms before it is visible (receive.lua).
local hidden = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE', 'WITHSCORES')
for i = 2, #hidden, 2 do
  if string.find(hidden[i], '.', 1, true) then in_flight = in_flight + 1 end
end
-- The oldest message is among the first by visible-at; ids grow with send
-- time, so the smallest id there is the oldest one sent.
local oldest = -1
local groups, groups_in_flight = 0, 0
local head = redis.call('ZRANGE', vis_key, 0, 9)
local fifo = redis.call('HGET', meta_key, 'fifo') == '1'
if fifo then
  -- what waits in gm is visible; a ready group's head is the oldest of it
  local waiting = redis.call('ZCARD', KEYS[5])
  visible = visible + waiting
  total = total + waiting
  groups_in_flight = redis.call('HLEN', KEYS[7])
  groups = redis.call('ZCARD', KEYS[6]) + groups_in_flight
  local g = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
  if #g > 0 then head[#head + 1] = id_of(tonumber(g[2])) end
  -- and the first waiting message of (up to about 100) groups held by one in
  -- flight, which may be older than every ready group's
  local scan = redis.call('HSCAN', KEYS[7], 0, 'COUNT', 100)[2]
  for i = 1, #scan, 2 do
    local first = fifo_head(KEYS[5], scan[i], 1)
    if #first > 0 then head[#head + 1] = first[1] end
  end
end
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
  redis.call('ZCARD', KEYS[4]), groups, groups_in_flight}
