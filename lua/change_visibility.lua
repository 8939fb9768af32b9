--[[ change_visibility: hide received messages for a new timeout, counted
from now, each only by its latest receipt. 0 makes a message visible at once.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> stored message, behind 'R<token>:...|' once received
KEYS[3] vis    zset: id -> visible-at (received: - 0.5, see receive.lua)
KEYS[4] wake   list: wake-up token for waiting receivers

ARGV[1] timeout in ms (0..12 h)
ARGV[2..2n+1] id, token pairs taken from the receipts

On a FIFO queue a receipt changes only a message still in flight (in vis):
once its lease ended and a receive put it back in its group, it is stale.

Wakes waiting receivers when a message becomes visible before the earliest
hidden one (their computed sleep would otherwise overshoot).

Reply: one integer per receipt: 1 changed, 0 stale or unknown receipt.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local timeout = arg_int(ARGV[1], 0, 43200000)
if not timeout then return bad_arg('timeout', 'an integer from 0 to 43200000 (ms)') end
local n = (#ARGV - 1) / 2
if n < 1 or n % 1 ~= 0 then return bad_arg('receipts', '1 or more id, token pairs') end

local cfg = redis.call('HMGET', meta_key, 'vt', 'fifo')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local fifo = cfg[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local visible_at = now + timeout
local score = visible_at - 0.5 -- received: half a ms early, see receive.lua
local ids = {}
for i = 1, n do ids[i] = ARGV[2 * i] end
local msgs = redis.call('HMGET', msgs_key, unpack(ids))
-- The earliest hidden message decides how long waiting receivers sleep; if a
-- message now becomes visible before it, they must look again.
local head = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
local wake = #head == 0 or score < tonumber(head[2])
local out, z = {}, {}
for i = 1, n do
  local m = msgs[i]
  local prefix = 'R' .. ARGV[2 * i + 1] .. ':'
  if m and string.sub(m, 1, #prefix) == prefix
      and not (fifo and not redis.call('ZSCORE', vis_key, ids[i])) then
    out[i] = 1
    z[#z + 1] = score
    z[#z + 1] = ids[i]
  else
    out[i] = 0
  end
end
if #z > 0 then
  redis.call('ZADD', vis_key, 'XX', unpack(z))
  if wake and redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, 1)
  end
end
return out
