--[[ delete: delete received messages, each only by its latest receipt, and
hand tracked messages' replies to their senders.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> stored message, behind 'R<token>:...|' once
               received (see _prelude.lua); a request's loses its flag once
               its sender gave up
KEYS[3] vis    zset: id -> visible-at
KEYS[4] why    hash: id -> dead-letter record (dead-letter queues)
KEYS[5] wake   list: wake-up token for waiting receivers
KEYS[6] gm     } a FIFO queue's waiting messages, ready groups and groups in
KEYS[7] gr     } flight: deleting a group's last message in flight lets the
KEYS[8] gf     } group go on (and wakes a receiver); untouched unless fifo
               (for a dead-letter queue, gm is its FIFO source's index of
               its dead letters by id: a deleted one leaves it)
KEYS[9..] reply keys (lists), one per request receipt ('r' below), in order

ARGV[1] the queue's events channel ('' when no receipt is an events one)
ARGV[2] reply key TTL in ms
ARGV[3] '1' when the receipts come as triples, '' for plain pairs, 'j' when
        ARGV[4] holds every (untracked) receipt joined by spaces: one
        argument instead of 2n keeps the client's command packing cheap
ARGV[4..] id, token pairs taken from the receipts; or id, token, tracked
          triples where tracked is '' (untracked), 'r' .. reply (a request:
          RPUSH 'p' .. reply on its reply key) or 'e' .. reply (publish
          'processed|<id>|<reply>'). A reply is an encoded body (kind byte).

Untracked batches come as pairs and cost nothing extra.
Reply: one character per receipt, '1' deleted, '0' stale or unknown receipt
(a string: cheaper to build and to read than a list of integers).
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, why_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local channel, ttl, mode = ARGV[1], ARGV[2], ARGV[3]
local tracked = mode == '1'

local ids, tokens = {}, {}
local stride = tracked and 3 or 2
if mode == 'j' then
  -- Each match must start where the last one ended (after one space), and
  -- the last end the string: nothing else may hide between the receipts.
  local joined, pos = ARGV[4] or '', 1
  for s, id, token, e in string.gmatch(joined, '()(%d+)%.(%d+) ?()') do
    if s ~= pos then break end
    pos = e
    ids[#ids + 1] = id
    tokens[#tokens + 1] = token
  end
  if pos ~= #joined + 1 or #ids == 0 or string.byte(joined, -1) == 32 then
    return bad_arg('receipts', "'<id>.<token>' receipts joined by single spaces")
  end
elseif tracked or mode == '' then
  local n = (#ARGV - 3) / stride
  if n < 1 or n % 1 ~= 0 then
    return bad_arg('receipts', tracked and '1 or more id, token, tracked triples' or '1 or more id, token pairs')
  end
  local requests = 0
  for i = 1, n do
    ids[i] = ARGV[stride * (i - 1) + 4]
    tokens[i] = ARGV[stride * (i - 1) + 5]
    if tracked then
      local f = string.byte(ARGV[stride * (i - 1) + 6], 1)
      if f == 114 then
        requests = requests + 1
      elseif f and f ~= 101 then
        return bad_arg('receipts', "tracked must be '', 'r' .. reply or 'e' .. reply")
      end
    end
  end
  if tracked then
    if requests ~= #KEYS - 8 then return bad_arg('receipts', 'one reply key per request receipt') end
    if not arg_int(ttl, 1, 86400000) then return bad_arg('reply_ttl', 'an integer from 1 to 86400000 (ms)') end
  end
else
  return bad_arg('mode', "'', '1' or 'j'")
end

local cfg = redis.call('HMGET', meta_key, 'vt', 'dlq', 'fifo')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local is_dlq = cfg[2] == '1'
local n = #ids
local msgs = redis.call('HMGET', msgs_key, unpack(ids))
local out, hit, seen = {}, {}, {}
local nhit = 0
local k = 8
local token, prefix -- receipts of one receive share its token
for i = 1, n do
  local m, id = msgs[i], ids[i]
  if tokens[i] ~= token then
    token = tokens[i]
    prefix = 'R' .. token .. ':'
  end
  -- (a receipt twice in one batch: the first one counts; untracked batches
  -- find out from ZREM below, tracked ones here, before a reply is sent)
  local ok = m and string.find(m, prefix, 1, true) == 1 and not (tracked and seen[id])
  if ok then
    out[i] = '1'
    nhit = nhit + 1
    hit[nhit] = id
    if tracked then seen[id] = true end
  else
    out[i] = '0'
  end
  if tracked then
    local x = ARGV[stride * (i - 1) + 6]
    local f = string.byte(x, 1)
    if f == 114 then -- 'r'
      k = k + 1
      -- the flag after sent_at is gone once the sender gave up (withdraw.lua)
      if ok and string.byte(m, header_end(m) + 14) == 63 then
        redis.call('RPUSH', KEYS[k], 'p' .. string.sub(x, 2))
        redis.call('PEXPIRE', KEYS[k], ttl)
      end
    elseif f == 101 and ok then -- 'e'
      redis.call('PUBLISH', channel, 'processed|' .. id .. '|' .. string.sub(x, 2))
    end
  end
end
if nhit > 0 and cfg[3] == '1' then
  -- FIFO: one by one, as each frees its group (in flight: in vis) or leaves
  -- its place in gm (its lease ended and a receive put it back)
  local gm_key, gr_key, gf_key = KEYS[6], KEYS[7], KEYS[8]
  local byid, removed, ready, touched = {}, 0, false, {}
  local scores = redis.call('ZMSCORE', vis_key, unpack(hit))
  local in_vis, waiting = {}, {}
  for j, id in ipairs(hit) do
    if scores[j] then in_vis[id] = true end
  end
  for i = 1, n do
    if out[i] == '1' then
      if byid[ids[i]] then
        out[i] = '0' -- the same receipt again: only its first counts
      else
        byid[ids[i]] = true
        local group = fifo_group(msgs[i])
        if group and in_vis[ids[i]] then
          touched[group] = (touched[group] or 0) + 1
        elseif group then
          waiting[#waiting + 1] = fifo_prefix(group) .. ids[i]
          touched[group] = touched[group] or 0
        end
        removed = removed + 1
      end
    end
  end
  redis.call('ZREM', vis_key, unpack(hit))
  if #waiting > 0 then redis.call('ZREM', gm_key, unpack(waiting)) end
  for group, k in pairs(touched) do
    if k == 0 then
      if fifo_settle(gm_key, gr_key, gf_key, group) then ready = true end
    elseif fifo_release(gf_key, group, k) <= 0 then
      -- its last message in flight ended: a busy group was not ready
      if fifo_settle(gm_key, gr_key, gf_key, group, true) then ready = true end
    end
  end
  redis.call('HDEL', msgs_key, unpack(hit))
  redis.call('HINCRBY', meta_key, 'deleted_total', removed)
  if ready and redis.call('LLEN', KEYS[5]) == 0 then redis.call('RPUSH', KEYS[5], 1) end
elseif nhit > 0 then
  local removed = redis.call('ZREM', vis_key, unpack(hit))
  redis.call('HDEL', msgs_key, unpack(hit))
  if is_dlq then
    redis.call('HDEL', why_key, unpack(hit))
    redis.call('ZREM', KEYS[6], unpack(hit)) -- a FIFO source's index of its dead letters
  end
  redis.call('HINCRBY', meta_key, 'deleted_total', removed)
  if removed < nhit then -- the same receipt more than once: only its first counts
    for i = 1, n do
      if out[i] == '1' then
        if seen[ids[i]] then out[i] = '0' else seen[ids[i]] = true end
      end
    end
  end
end
return table.concat(out)
