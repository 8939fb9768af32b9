--[[ delete: delete received messages, each only by its latest receipt, and
hand tracked messages' replies to their senders.

KEYS[1] meta   hash: attributes and counters
KEYS[2] msgs   hash: id -> message
KEYS[3] vis    zset: id -> visible-at
KEYS[4] state  hash: id -> '<token>:<receive_count>:<first_received_at>',
               with a trailing 'x' once a request's sender gave up
KEYS[5] why    hash: id -> dead-letter record (dead-letter queues)
KEYS[6..] reply keys (lists), one per request receipt ('r' below), in order

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
Reply: one integer per receipt: 1 deleted, 0 stale or unknown receipt.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, state_key, why_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
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
    if requests ~= #KEYS - 5 then return bad_arg('receipts', 'one reply key per request receipt') end
    if not arg_int(ttl, 1, 86400000) then return bad_arg('reply_ttl', 'an integer from 1 to 86400000 (ms)') end
  end
else
  return bad_arg('mode', "'', '1' or 'j'")
end

if redis.call('EXISTS', meta_key) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local n = #ids
local states = redis.call('HMGET', state_key, unpack(ids))
local out, hit, seen = {}, {}, {}
local k = 5
for i = 1, n do
  local st, id = states[i], ids[i]
  local prefix = tokens[i] .. ':'
  local ok = st and not seen[id] and string.sub(st, 1, #prefix) == prefix
  if ok then
    out[i] = 1
    hit[#hit + 1] = id
    seen[id] = true
  else
    out[i] = 0
  end
  if tracked then
    local x = ARGV[stride * (i - 1) + 6]
    local f = string.byte(x, 1)
    if f == 114 then -- 'r'
      k = k + 1
      if ok and string.byte(st, -1) ~= 120 then -- sender still waiting
        redis.call('RPUSH', KEYS[k], 'p' .. string.sub(x, 2))
        redis.call('PEXPIRE', KEYS[k], ttl)
      end
    elseif f == 101 and ok then -- 'e'
      redis.call('PUBLISH', channel, 'processed|' .. id .. '|' .. string.sub(x, 2))
    end
  end
end
if #hit > 0 then
  redis.call('ZREM', vis_key, unpack(hit))
  redis.call('HDEL', msgs_key, unpack(hit))
  redis.call('HDEL', state_key, unpack(hit))
  redis.call('HDEL', why_key, unpack(hit))
  redis.call('HINCRBY', meta_key, 'deleted_total', #hit)
end
return out
