--[[ unreceive: give received messages of a FIFO queue back unprocessed, each
only by its latest receipt, as if their last receive had not happened.

A consumer that holds several consecutive messages of a group (one receive
brought them) runs them one after another; when one fails, it gives the later
ones back without running them, so the failed one comes back first. A
change_visibility 0 would do that too, but would leave their receive counted:
behind a message that fails again and again they would reach
max_receive_count and be dead-lettered without ever having run.

Each message leaves flight (vis) for its place in its group (gm), visible at
once, with its receive_count one less; back at 0 it is as it was before its
first receive (no first_received_at; 'G', or 'D<since>' when its retention
started at a delay or a redrive). Its group moves on as after a
change_visibility 0 (ready when nothing of it is in flight), and waiting
receivers are woken when it becomes ready. The receive itself stays counted
(received_total).

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> stored message, behind its FIFO header (see
               _prelude.lua)
KEYS[3] vis    zset: what is in flight (or delayed)
KEYS[4] wake   list: wake-up token for waiting receivers
KEYS[5] gm     } the queue's waiting messages, ready groups and groups in
KEYS[6] gr     } flight (see fifo_settle in _prelude.lua)
KEYS[7] gf     }

ARGV[1..2n] id, token pairs taken from the receipts

Only a message still in flight by that receipt goes back: once its lease
ended and a receive put it back (or it was given back already), the receipt
is stale. Afterwards the receipt is stale for change_visibility; delete by it
still works while the message waits, as after a lease that ended, unless the
receive given back was its first (its header no longer names the token).
Reply: one integer per receipt: 1 given back, 0 stale or unknown receipt.
Errors: RQ_NOQUEUE; RQ_BADARG (also: not a FIFO queue).
]]
local meta_key, msgs_key, vis_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local gm_key, gr_key, gf_key = KEYS[5], KEYS[6], KEYS[7]
local n = #ARGV / 2
if n < 1 or n % 1 ~= 0 then return bad_arg('receipts', '1 or more id, token pairs') end

local cfg = redis.call('HMGET', meta_key, 'vt', 'fifo')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
if cfg[2] ~= '1' then return bad_arg('queue', 'a FIFO queue') end
local ids = {}
for i = 1, n do ids[i] = ARGV[2 * i - 1] end
local msgs = redis.call('HMGET', msgs_key, unpack(ids))
local out, h, z, touched = {}, {}, {}, {}
for i = 1, n do
  out[i] = 0
  local m = msgs[i]
  local state, group, rest
  if m then state, group, rest = fifo_parts(m) end
  local token, rc, first, since
  if state then token, rc, first, since = string.match(state, '^R(%d+):(%d+):(%d+):?(%d*)$') end
  -- in flight by this receipt: its header names the token, and it is in vis
  -- (ZREM also makes a second copy of the receipt in this call stale)
  if token == ARGV[2 * i] and redis.call('ZREM', vis_key, ids[i]) == 1 then
    out[i] = 1
    rc = tonumber(rc) - 1
    if rc > 0 then
      state = 'R' .. token .. ':' .. rc .. ':' .. first .. (since ~= '' and ':' .. since or '')
    else
      state = since ~= '' and 'D' .. since or 'G'
    end
    h[#h + 1] = ids[i]
    h[#h + 1] = state .. fifo_tail(group) .. rest
    z[#z + 1] = 0
    z[#z + 1] = fifo_prefix(group) .. ids[i]
    fifo_release(gf_key, group)
    touched[group] = true
  end
end
if #h > 0 then
  redis.call('HSET', msgs_key, unpack(h))
  redis.call('ZADD', gm_key, unpack(z))
  local ready = false
  for group in pairs(touched) do
    if fifo_settle(gm_key, gr_key, gf_key, group) then ready = true end
  end
  if ready and redis.call('LLEN', wake_key) == 0 then redis.call('RPUSH', wake_key, 1) end
end
return out
