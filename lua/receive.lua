--[[ receive: take up to N visible messages, oldest first, and hide them.

In the same call, a message past its retention or past max_receive_count is
not delivered: it moves to the dead-letter queue (reason 'expired' or
'max_receives'); one already in a dead-letter queue that expires is dropped.
Retention counts from when a message became visible: its send plus its
delay, or its redrive. That moment is its visible-at score until its first
receive; the state keeps it from then on (4th field) when it differs from
sent_at. A dead letter's retention counts from its death.

The passes page through the visible part of vis without changing it (removals
and the new visible-at of delivered messages are written after them), so no
entry is looked at twice: with visibility timeout 0 a delivered message is
not read again, nor is a message both delivered and dead-lettered. One call
looks at no more than N + SCAN_BUDGET visible entries; when that budget ends
before anything could be delivered, next_ms is 0 and the client calls again.

KEYS[1]  meta      hash: attributes (vt, retention, mrc, dlq) and counters
KEYS[2]  msgs      hash: id -> sent_at (13 digits) .. encoded message
KEYS[3]  vis       zset: id scored by visible-at (ms)
KEYS[4]  state     hash: id -> '<token>:<receive_count>:<first_received_at>
                   [:<visible_since>]'
KEYS[5]  seq       string: id and receipt-token counter
KEYS[6]  wake      list: wake-up token for waiting receivers
KEYS[7]  why       hash: id -> '<dead_at>|<reason>|<detail>' (dead-letter queues)
KEYS[8]  dlq_meta  } the dead-letter queue's meta, msgs, vis, why and wake;
KEYS[9]  dlq_msgs  } for a dead-letter queue itself these are never touched
KEYS[10] dlq_vis   }
KEYS[11] dlq_why   }
KEYS[12] dlq_wake  }

ARGV[1] max messages (1..1000)
ARGV[2] visibility timeout in ms, or '' for the queue's
ARGV[3] the queue's events channel ('' for a dead-letter queue)

Tracked messages (flag byte after sent_at, see rqueue/_codec.py): for '!'
the script publishes 'received|<id>|<receive_count>', 'dead_lettered|<id>|
<reason>|<detail>' or 'expired|<id>|' on the channel. A '?' (request) message
dead-lettered here is stored without its flag and reported in the reply, so
the client pushes the news to its sender's reply key (a key this script
cannot know in advance).

Waiting receivers sleep until the earliest hidden message becomes visible. A
receive that hides messages earlier than that (or when none was hidden)
pushes a wake-up so they look again; so does one that fills its batch while
more is visible.

Reply: {ids, encoded messages, states, whys, next_ms, buried}; whys is empty
unless this is a dead-letter queue ('' for an entry without a record); buried
is {id, '<reason>|<detail>', ...} for requests dead-lettered in this call.
next_ms is -1 when nothing is hidden, 0 when a message is still visible (the
scan budget ran out), else ms until the next hidden message is visible; it is
computed only when nothing was delivered.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local max = arg_int(ARGV[1], 1, 1000)
if not max then return bad_arg('max_messages', 'an integer from 1 to 1000') end
if ARGV[2] ~= '' and not arg_int(ARGV[2], 0, 43200000) then
  return bad_arg('visibility_timeout', "'' (the queue's) or an integer from 0 to 43200000 (ms)")
end
local channel = ARGV[3]
if not channel then return bad_arg('channel', "the queue's events channel ('' for a dead-letter queue)") end

local meta_key, msgs_key, vis_key, state_key, seq_key, wake_key, why_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local dlq_meta_key, dlq_msgs_key, dlq_vis_key, dlq_why_key, dlq_wake_key =
  KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]

local cfg = redis.call('HMGET', meta_key, 'vt', 'retention', 'mrc', 'dlq')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local vt = tonumber(ARGV[2] ~= '' and ARGV[2] or cfg[1])
local mrc = tonumber(cfg[3])
local is_dlq = cfg[4] == '1'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(cfg[2])

local out_ids, out_msgs, out_states, out_whys, buried = {}, {}, {}, {}, {}
local dead_n, expired_n, dropped_n = 0, 0, 0

local function bury(id, msg, reason, detail)
  local flag = string.byte(msg, 14)
  if flag == 63 then -- a request: its sender hears of it through the client
    msg = string.sub(msg, 1, 13) .. string.sub(msg, 15)
    buried[#buried + 1] = id
    buried[#buried + 1] = reason .. '|' .. detail
  elseif flag == 33 then
    if reason == 'expired' then
      redis.call('PUBLISH', channel, 'expired|' .. id .. '|')
    else
      redis.call('PUBLISH', channel, 'dead_lettered|' .. id .. '|' .. reason .. '|' .. detail)
    end
  end
  redis.call('HSET', dlq_msgs_key, id, msg)
  redis.call('ZADD', dlq_vis_key, now, id)
  redis.call('HSET', dlq_why_key, id, string.format('%d|%s|%s', now, reason, detail))
end

local SCAN_BUDGET = 1000
local cap = max + SCAN_BUDGET
local scanned = 0
local gone, deliver = {}, {}
local more = false -- the scan stopped on its budget or a full batch, with more maybe visible
while true do
  local want = max - #deliver
  if want <= 0 then
    more = true
    break
  end
  -- A page after one with removals grows with what was scanned, so the
  -- offsets walked stay linear in the entries looked at.
  local page = math.min(math.max(want, scanned), cap - scanned)
  if page <= 0 then
    more = true
    break
  end
  local flat = redis.call('ZRANGE', vis_key, '-inf', now, 'BYSCORE', 'LIMIT', scanned, page, 'WITHSCORES')
  local n = #flat / 2
  if n == 0 then break end
  local ids = {}
  for i = 1, n do ids[i] = flat[2 * i - 1] end
  local msgs = redis.call('HMGET', msgs_key, unpack(ids))
  local states = redis.call('HMGET', state_key, unpack(ids))
  local whys = is_dlq and redis.call('HMGET', why_key, unpack(ids)) or {}
  for i, id in ipairs(ids) do
    if #deliver == max then break end
    scanned = scanned + 1
    local msg, st = msgs[i], states[i]
    local rc, first, since = 0, nil, nil
    if st then
      local _, r, f, v = string.match(st, '^(%d+):(%d+):(%d+):?(%d*)')
      rc, first = tonumber(r), f
      if v ~= '' then since = tonumber(v) end
    end
    local born
    if not msg then
      born = nil -- an index entry without a message: drop it
    elseif is_dlq then
      -- an entry without a record (an old version's send) expires from its send
      born = tonumber(string.match(whys[i] or '', '^(%d+)')) or tonumber(string.sub(msg, 1, 13))
    else
      born = tonumber(string.sub(msg, 1, 13))
      if not st then
        -- never received: it became visible at its score (send + delay, or redrive)
        local score = tonumber(flat[2 * i])
        if born and score > born then
          since = score
          born = score
        end
      elseif since then
        born = since
      end
    end
    if not born then
      gone[#gone + 1] = id
    elseif born <= cutoff then
      gone[#gone + 1] = id
      if is_dlq then
        dropped_n = dropped_n + 1
      else
        expired_n = expired_n + 1
        bury(id, msg, 'expired', rc)
      end
    elseif mrc and rc >= mrc then
      gone[#gone + 1] = id
      dead_n = dead_n + 1
      bury(id, msg, 'max_receives', rc)
    else
      deliver[#deliver + 1] = {id, msg, rc + 1, first or now, whys[i], since}
    end
  end
  if n < page then break end
end

if #gone > 0 then
  redis.call('ZREM', vis_key, unpack(gone))
  redis.call('HDEL', msgs_key, unpack(gone))
  redis.call('HDEL', state_key, unpack(gone))
  if is_dlq then redis.call('HDEL', why_key, unpack(gone)) end
end

local wake = false
if #deliver > 0 then
  local last = redis.call('INCRBY', seq_key, #deliver)
  local base = last - #deliver
  local hs, zs = {}, {}
  local hidden_until = now + vt
  for i, d in ipairs(deliver) do
    local st
    if d[6] then
      st = string.format('%d:%d:%d:%d', base + i, d[3], d[4], d[6])
    else
      st = string.format('%d:%d:%d', base + i, d[3], d[4])
    end
    hs[2 * i - 1] = d[1]
    hs[2 * i] = st
    zs[2 * i - 1] = hidden_until
    zs[2 * i] = d[1]
    out_ids[i], out_msgs[i], out_states[i] = d[1], d[2], st
    if is_dlq then
      out_whys[i] = d[5] or ''
    elseif string.byte(d[2], 14) == 33 then
      redis.call('PUBLISH', channel, 'received|' .. d[1] .. '|' .. d[3])
    end
  end
  -- Waiters sleep until the earliest hidden message is visible: hiding one
  -- before that (or when none is hidden) must make them look again.
  local head = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
  wake = #head == 0 or hidden_until < tonumber(head[2])
  redis.call('HSET', state_key, unpack(hs))
  redis.call('ZADD', vis_key, unpack(zs))
  redis.call('HINCRBY', meta_key, 'received_total', #deliver)
end
if dead_n + expired_n > 0 then
  if dead_n > 0 then redis.call('HINCRBY', meta_key, 'dead_lettered_total', dead_n) end
  if expired_n > 0 then redis.call('HINCRBY', meta_key, 'expired_total', expired_n) end
  redis.call('HINCRBY', dlq_meta_key, 'sent_total', dead_n + expired_n)
  if redis.call('LLEN', dlq_wake_key) == 0 then redis.call('RPUSH', dlq_wake_key, 1) end
end
if dropped_n > 0 then
  redis.call('HINCRBY', meta_key, 'expired_total', dropped_n)
end

local next_ms = -1
if #deliver == 0 then
  local head = redis.call('ZRANGE', vis_key, 0, 0, 'WITHSCORES')
  if #head > 0 then
    next_ms = math.max(0, tonumber(head[2]) - now)
  end
elseif more and not wake then
  -- Batch full: if more is visible, pass the wake-up on to the next waiter.
  wake = #redis.call('ZRANGE', vis_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
end
if wake and redis.call('LLEN', wake_key) == 0 then
  redis.call('RPUSH', wake_key, 1)
end
return {out_ids, out_msgs, out_states, out_whys, next_ms, buried}
