--[[ receive: take up to N visible messages, oldest first, and hide them.

In the same call, a message past its retention or past max_receive_count is
not delivered: it moves to the dead-letter queue (reason 'expired' or
'max_receives'); one already in a dead-letter queue that expires is dropped.
Retention counts from when a message became visible: its send plus its
delay, or its redrive. That moment is its visible-at score until its first
receive; a delayed or redriven message carries it in a header 'D<ms>|' and
its receive header keeps it from then on (4th field). A dead letter's
retention counts from its death.

The passes page through the visible part of vis without changing it (removals
and the new visible-at of delivered messages are written after them), so no
entry is looked at twice: with visibility timeout 0 a delivered message is
not read again, nor is a message both delivered and dead-lettered. One call
looks at no more than N + SCAN_BUDGET visible entries; when that budget ends
before anything could be delivered, next_ms is 0 and the client calls again.

KEYS[1]  meta      hash: attributes (vt, retention, mrc, dlq) and counters
KEYS[2]  msgs      hash: id -> stored message (see _prelude.lua): once
                   received, behind its header 'R<token>:<receive_count>:
                   <first_received_at>[:<visible_since>]|'
KEYS[3]  vis       zset: id scored by visible-at (ms); a received message by
                   its visible-at - 0.5 (in flight while hidden)
KEYS[4]  wake      list: wake-up token for waiting receivers
KEYS[5]  why       hash: id -> '<dead_at>|<reason>|<detail>' (dead-letter queues)
KEYS[6]  dlq_meta  } the dead-letter queue's meta, msgs, vis, why and wake;
KEYS[7]  dlq_msgs  } for a dead-letter queue itself these are never touched
KEYS[8]  dlq_vis   }
KEYS[9]  dlq_why   }
KEYS[10] dlq_wake  }
KEYS[11] gm        } a FIFO queue's waiting messages, ready groups and groups
KEYS[12] gr        } in flight (see fifo_settle in _prelude.lua); untouched
KEYS[13] gf        } unless meta says fifo
KEYS[14] gd        } hash: group -> when its latest delayed message is visible
KEYS[15] dlq_index  zset: the dead-letter queue's FIFO dead letters by id (redrive.lua)

ARGV[1] max messages (1..1000)
ARGV[2] visibility timeout in ms, or '' for the queue's
ARGV[3] the queue's events channel ('' for a dead-letter queue)

Tracked messages (flag byte after sent_at, see rqueue/_codec.py): for '!'
the script publishes 'received|<id>|<receive_count>', 'dead_lettered|<id>|
<reason>|<detail>' or 'expired|<id>|' on the channel. A '?' (request) message
dead-lettered here is stored without its flag and reported in the reply, so
the client pushes the news to its sender's reply key (a key this script
cannot know in advance).

A paused queue (meta 'paused', see pause.lua) hands out nothing; next_ms is
the time until its next hidden message becomes visible (or -1), so waiting
receivers wake then or at the resume's wake-up.

Waiting receivers sleep until the earliest hidden message becomes visible. A
receive that hides messages earlier than that (or when none was hidden)
pushes a wake-up so they look again; so does one that fills its batch while
more is visible.

A FIFO queue (meta 'fifo') keeps in vis only what is in flight or delayed.
First, entries of vis that are due (a lease ended, change_visibility 0, a
delay passed; at most FIFO_BUDGET a call) go back to their group's place in
gm. Then the oldest ready groups hand out their first messages in order, up
to N in all: the messages of one group that a call delivers are consecutive,
and hold the group (gf) until each is deleted or comes back. A message past
its retention or max_receive_count is dead-lettered on the way, and its group
moves on; its dead-letter record keeps its group ('<dead_at>~<len>:<group>|
<reason>|<detail>') for redrive.

Reply: {ids, messages, token, now, again, whys, next_ms, buried, groups}. messages
are stored messages without their header; every one was received by this
call with token (its receipt is '<id>.<token>'), for the first time at now
unless again holds {index (from 1), receive_count, first_received_at, ...}
for it. groups (FIFO queues) gives each message's group, else is empty. whys is empty unless this is a dead-letter queue ('' for an entry
without a record); buried is {id, '<reason>|<detail>', ...} for requests
dead-lettered in this call. next_ms is -1 when nothing is hidden, 0 when a
message is still visible (the scan budget ran out), else ms until the next
hidden message is visible; it is computed only when nothing was delivered.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local max = arg_int(ARGV[1], 1, 1000)
if not max then return bad_arg('max_messages', 'an integer from 1 to 1000') end
if ARGV[2] ~= '' and not arg_int(ARGV[2], 0, 43200000) then
  return bad_arg('visibility_timeout', "'' (the queue's) or an integer from 0 to 43200000 (ms)")
end
local channel = ARGV[3]
if not channel then return bad_arg('channel', "the queue's events channel ('' for a dead-letter queue)") end

local meta_key, msgs_key, vis_key, wake_key, why_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local dlq_meta_key, dlq_msgs_key, dlq_vis_key, dlq_why_key, dlq_wake_key =
  KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local gm_key, gr_key, gf_key, gd_key = KEYS[11], KEYS[12], KEYS[13], KEYS[14]

local cfg = redis.call('HMGET', meta_key, 'vt', 'retention', 'mrc', 'dlq', 'paused', 'fifo')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local vt = tonumber(ARGV[2] ~= '' and ARGV[2] or cfg[1])
local mrc = tonumber(cfg[3])
local is_dlq = cfg[4] == '1'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if cfg[5] == '1' then
  -- Paused (pause.lua): nothing, and waiters sleep until the resume's wake-up or until
  -- the next hidden message becomes visible (so after a resume each one's timer is
  -- right even if another took the wake-up); what is visible waits for the resume.
  local head = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
  local wait = #head > 0 and math.ceil(tonumber(head[2]) - now) or -1
  return {{}, {}, '', now, {}, {}, wait, {}, {}}
end
local cutoff = now - tonumber(cfg[2])

local out_ids, out_msgs, out_whys, buried = {}, {}, {}, {}
local dead_n, expired_n, dropped_n = 0, 0, 0

local function bury(id, msg, reason, detail, group)
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
  local at = string.format('%d', now)
  if group then
    at = at .. '~' .. #group .. ':' .. group
    redis.call('ZADD', KEYS[15], 0, id)
  end
  redis.call('HSET', dlq_why_key, id, at .. '|' .. reason .. '|' .. detail)
end

-- One token per call that delivers (meta 'tok', counting up from the server's
-- clock in microseconds when the queue was created, so no life of a queue of
-- this name reissues one; taken at the first delivery, so an empty receive
-- writes nothing): a receipt is '<id>.<token>'. fresh is the header of a
-- first receive.
local nows = string.format('%d', now)
local token, fresh
local function take_token()
  token = string.format('%d', redis.call('HINCRBY', meta_key, 'tok', 1))
  fresh = 'R' .. token .. ':1:' .. nows .. '|'
end
-- A received message's score is half a millisecond before it is visible again:
-- visible at hidden_until all the same (now is whole ms), and stats tells a
-- message in flight (x.5) from a delayed one (whole) by its score alone.
local hidden_until = now + vt
local score = hidden_until - 0.5
local hs, zs, again = {}, {}, {}
local n_out = 0

local function deliver(id, msg, head, rc, why)
  n_out = n_out + 1
  hs[2 * n_out - 1] = id
  hs[2 * n_out] = head .. msg
  zs[2 * n_out - 1] = score
  zs[2 * n_out] = id
  out_ids[n_out], out_msgs[n_out] = id, msg
  if is_dlq then
    out_whys[n_out] = why or ''
  elseif string.byte(msg, 14) == 33 then
    redis.call('PUBLISH', channel, 'received|' .. id .. '|' .. (rc + 1))
  end
end

if cfg[6] == '1' then
  local gone = {}
  -- 1. What is due in vis goes back to its group's place in gm: a lease ended
  -- or change_visibility 0 ('R': it was in flight), or a delay passed.
  local FIFO_BUDGET = 1000
  local due = redis.call('ZRANGE', vis_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, FIFO_BUDGET)
  if #due > 0 then
    local dm = redis.call('HMGET', msgs_key, unpack(due))
    local z, touched, lost = {}, {}, {}
    for i, id in ipairs(due) do
      local state, group
      if dm[i] then state, group = fifo_parts(dm[i]) end
      if group then
        z[#z + 1] = 0
        z[#z + 1] = fifo_prefix(group) .. id
        local kind = string.byte(state, 1)
        if kind == 82 then
          fifo_release(gf_key, group)
        elseif kind == 68 and not touched[group] then
          -- its group's latest delay may be over: forget it then (send.lua)
          local at = redis.call('HGET', gd_key, group)
          if at and tonumber(at) <= now then redis.call('HDEL', gd_key, group) end
        end
        touched[group] = true
      elseif dm[i] then
        -- a message without a group (an older client's send): a group of its own
        local rest = string.sub(dm[i], header_end(dm[i]) + 1)
        if string.find(rest, '^%d%d%d%d%d%d%d%d%d%d%d%d%d') then
          redis.call('HSET', msgs_key, id, 'G' .. fifo_tail(id) .. rest)
          z[#z + 1] = 0
          z[#z + 1] = fifo_prefix(id) .. id
          touched[id] = true
        else
          lost[#lost + 1] = id -- not a stored message at all: drop it
        end
      end
    end
    redis.call('ZREM', vis_key, unpack(due))
    if #lost > 0 then redis.call('HDEL', msgs_key, unpack(lost)) end
    if #z > 0 then redis.call('ZADD', gm_key, unpack(z)) end
    for group in pairs(touched) do fifo_settle(gm_key, gr_key, gf_key, group) end
  end

  -- 2. The oldest ready groups hand out their first messages, in order: their
  -- ids first (up to N in all), then every message in one HMGET.
  local out_groups = {}
  local groups = redis.call('ZRANGE', gr_key, 0, max - 1)
  local picks, all_ids = {}, {}
  local want = max
  for _, group in ipairs(groups) do
    if want <= 0 then break end
    local ids = fifo_head(gm_key, group, want)
    picks[#picks + 1] = {group, #all_ids, #ids}
    for _, id in ipairs(ids) do all_ids[#all_ids + 1] = id end
    want = want - #ids
  end
  local all_msgs = #all_ids > 0 and redis.call('HMGET', msgs_key, unpack(all_ids)) or {}
  local done, busy = {}, {}
  for _, pick in ipairs(picks) do
    local group, before, count = pick[1], pick[2], pick[3]
    local p = fifo_prefix(group)
    local tail = fifo_tail(group)
    local took = 0
    for i = before + 1, before + count do
      local id, stored = all_ids[i], all_msgs[i]
      local state, _, msg
      if stored and string.byte(stored, 1) == 71 and string.find(stored, tail, 2, true) == 2 then
        state, msg = 'G', string.sub(stored, #tail + 2) -- never received: 'G' .. tail, no parsing
      elseif stored then
        state, _, msg = fifo_parts(stored)
      end
      done[#done + 1] = p .. id
      if not state then
        if stored then gone[#gone + 1] = id end -- an entry without its message, or unreadable: drop it
      else
        local rc, first, since = 0, nil, nil
        local kind = string.byte(state, 1)
        if kind == 82 then
          local r, f, v = string.match(state, '^R%d+:(%d+):(%d+):?(%d*)$')
          rc, first = tonumber(r) or 0, f
          if v and v ~= '' then since = v end
        elseif kind == 68 then
          since = string.sub(state, 2)
        end
        local born = tonumber(since or string.sub(msg, 1, 13))
        if not born then
          gone[#gone + 1] = id
        elseif born <= cutoff then
          gone[#gone + 1] = id
          expired_n = expired_n + 1
          bury(id, msg, 'expired', rc, group)
        elseif mrc and rc >= mrc then
          gone[#gone + 1] = id
          dead_n = dead_n + 1
          bury(id, msg, 'max_receives', rc, group)
        else
          if not token then take_token() end
          first = first or nows
          if rc > 0 then
            again[#again + 1] = n_out + 1
            again[#again + 1] = rc + 1
            again[#again + 1] = tonumber(first)
          end
          local head = 'R' .. token .. ':' .. string.format('%d', rc + 1) .. ':' .. first
          if since then head = head .. ':' .. since end
          deliver(id, msg, head .. tail, rc, nil)
          out_groups[n_out] = group
          took = took + 1
        end
      end
    end
    if took > 0 then
      redis.call('HINCRBY', gf_key, group, took)
      busy[#busy + 1] = group
    else
      busy[#busy + 1] = false
    end
  end
  if #done > 0 then redis.call('ZREM', gm_key, unpack(done)) end
  local held = {}
  for k, pick in ipairs(picks) do
    if busy[k] then
      held[#held + 1] = pick[1]
    else
      fifo_settle(gm_key, gr_key, gf_key, pick[1]) -- all dead-lettered: the group moves on
    end
  end
  if #held > 0 then redis.call('ZREM', gr_key, unpack(held)) end
  if #gone > 0 then redis.call('HDEL', msgs_key, unpack(gone)) end

  local wake = false
  if n_out > 0 then
    local first_hidden = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    wake = #first_hidden == 0 or score < tonumber(first_hidden[2])
    redis.call('HSET', msgs_key, unpack(hs))
    redis.call('ZADD', vis_key, unpack(zs))
    redis.call('HINCRBY', meta_key, 'received_total', n_out)
  end
  if dead_n + expired_n > 0 then
    if dead_n > 0 then redis.call('HINCRBY', meta_key, 'dead_lettered_total', dead_n) end
    if expired_n > 0 then redis.call('HINCRBY', meta_key, 'expired_total', expired_n) end
    redis.call('HINCRBY', dlq_meta_key, 'sent_total', dead_n + expired_n)
    if redis.call('LLEN', dlq_wake_key) == 0 then redis.call('RPUSH', dlq_wake_key, 1) end
  end
  -- Ready groups left: another call delivers at once (0); else the next
  -- hidden message's time, or -1.
  local ready = redis.call('ZCARD', gr_key) > 0
  local next_ms = -1
  if n_out == 0 then
    if ready or #due == FIFO_BUDGET then
      next_ms = 0
    else
      local head = redis.call('ZRANGE', vis_key, 0, 0, 'WITHSCORES')
      if #head > 0 then next_ms = math.max(0, math.ceil(tonumber(head[2]) - now)) end
    end
  elseif ready then
    wake = true
  end
  if wake and redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, 1)
  end
  return {out_ids, out_msgs, token or '', now, again, out_whys, next_ms, buried, out_groups}
end

-- A message never received was born at its score (its send plus its delay,
-- or its redrive), so unless some score is past the cutoff none of those can
-- have expired, and no score need be read.
local old = is_dlq or #redis.call('ZRANGE', vis_key, '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, 1) > 0

local SCAN_BUDGET = 1000
local cap = max + SCAN_BUDGET
local scanned = 0
local gone = {}
local more = false -- the scan stopped on its budget or a full batch, with more maybe visible
while true do
  local want = max - n_out
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
  local ids, scores
  if old then
    local flat = redis.call('ZRANGE', vis_key, '-inf', now, 'BYSCORE', 'LIMIT', scanned, page, 'WITHSCORES')
    ids, scores = {}, {}
    for i = 1, #flat / 2 do
      ids[i], scores[i] = flat[2 * i - 1], flat[2 * i]
    end
  else
    ids = redis.call('ZRANGE', vis_key, '-inf', now, 'BYSCORE', 'LIMIT', scanned, page)
  end
  local n = #ids
  if n == 0 then break end
  local msgs = redis.call('HMGET', msgs_key, unpack(ids))
  local whys = is_dlq and redis.call('HMGET', why_key, unpack(ids)) or {}
  for i = 1, n do
    if n_out == max then break end
    scanned = scanned + 1
    local id, msg = ids[i], msgs[i]
    local b = msg and string.byte(msg, 1)
    if b and b ~= 82 and b ~= 68 and not old then
      -- the common case: a first receive of a message sent without delay (deliver, inlined)
      if not token then take_token() end
      n_out = n_out + 1
      hs[2 * n_out - 1] = id
      hs[2 * n_out] = fresh .. msg
      zs[2 * n_out - 1] = score
      zs[2 * n_out] = id
      out_ids[n_out], out_msgs[n_out] = id, msg
      if string.byte(msg, 14) == 33 then
        redis.call('PUBLISH', channel, 'received|' .. id .. '|1')
      end
    else
      local rc, first, since = 0, nil, nil
      if b == 82 then -- 'R': received before
        local r, f, v, p = string.match(msg, '^R%d+:(%d+):(%d+):?(%d*)|()')
        if p then
          rc, first, msg = tonumber(r), f, string.sub(msg, p)
          if v ~= '' then since = v end
        else
          msg = nil -- a header this layout cannot read: drop the entry
        end
      elseif b == 68 then -- 'D': never received, visible since its delay or redrive
        local v, p = string.match(msg, '^D(%d+)|()')
        if p then since, msg = v, string.sub(msg, p) else msg = nil end
      end
      local born
      if not msg then
        born = nil -- an index entry without a message: drop it
      elseif is_dlq then
        -- an entry without a record (an old version's send) expires from its send
        born = tonumber(string.match(whys[i] or '', '^(%d+)')) or tonumber(string.sub(msg, 1, 13))
      elseif rc == 0 and scores then
        born = tonumber(scores[i]) -- never received: born when it became visible
      else
        born = tonumber(since or string.sub(msg, 1, 13))
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
      elseif rc == 0 and not since then
        if not token then take_token() end
        deliver(id, msg, fresh, 0, whys[i])
      else
        -- 'R<token>:<receive_count>:<first_received_at>[:<visible_since>]|'
        if not token then take_token() end
        first = first or nows
        if rc > 0 then
          again[#again + 1] = n_out + 1
          again[#again + 1] = rc + 1
          again[#again + 1] = tonumber(first)
        end
        local head = 'R' .. token .. ':' .. string.format('%d', rc + 1) .. ':' .. first
        if since then head = head .. ':' .. since end
        deliver(id, msg, head .. '|', rc, whys[i])
      end
    end
  end
  if n < page then break end
end

if #gone > 0 then
  redis.call('ZREM', vis_key, unpack(gone))
  redis.call('HDEL', msgs_key, unpack(gone))
  if is_dlq then redis.call('HDEL', why_key, unpack(gone)) end
end

local wake = false
if n_out > 0 then
  -- Waiters sleep until the earliest hidden message is visible: hiding one
  -- before that (or when none is hidden) must make them look again.
  local first_hidden = redis.call('ZRANGE', vis_key, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
  wake = #first_hidden == 0 or score < tonumber(first_hidden[2])
  redis.call('HSET', msgs_key, unpack(hs))
  redis.call('ZADD', vis_key, unpack(zs))
  redis.call('HINCRBY', meta_key, 'received_total', n_out)
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
if n_out == 0 then
  local head = redis.call('ZRANGE', vis_key, 0, 0, 'WITHSCORES')
  if #head > 0 then
    next_ms = math.max(0, math.ceil(tonumber(head[2]) - now))
  end
elseif more and not wake then
  -- Batch full: if more is visible, pass the wake-up on to the next waiter.
  wake = #redis.call('ZRANGE', vis_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
end
if wake and redis.call('LLEN', wake_key) == 0 then
  redis.call('RPUSH', wake_key, 1)
end
return {out_ids, out_msgs, token or '', now, again, out_whys, next_ms, buried, {}}
