--[[ send: store a batch of messages, all or nothing.

KEYS[1] meta   hash: attributes (max_size, delay) and counters
KEYS[2] msgs   hash: id -> ['D<visible_at>|' if delayed] sent_at (13 digits)
               [flag] encoded message (see _prelude.lua)
KEYS[3] vis    zset: id scored by visible-at (ms)
KEYS[4] seq    string: id counter
KEYS[5] wake   list: wake-up token for waiting receivers
KEYS[6] gm     } a FIFO queue's waiting messages, ready groups and groups in
KEYS[7] gr     } flight (see fifo_settle in _prelude.lua); only for 'g'
KEYS[8] gf     }

ARGV[1] delay in ms, or '' for the queue's default; 'g' on a FIFO queue: the
        queue's delay, and ARGV[3..] are pairs of group (1..512 bytes) and
        encoded message
ARGV[2] tracking flag stored before every message: '' (untracked), '?'
        (a request: its sender blocks on a reply key) or '!' (events published)
ARGV[3..] encoded messages: one kind byte, then for an upper-case kind
          '<attributes length>:<attributes>', then the body

Every size is checked against max_size before anything is written.
Reply: {last, sent_at}; the batch's ids are id_of(last-n+1) .. id_of(last)
(see _prelude.lua).
A FIFO queue's message waits in gm behind the earlier ones of its group (or
in vis while its delay runs; receive.lua moves it to gm then). No FIFO message
becomes visible before one sent earlier: after the queue's delay was lowered,
one sent under the longer delay may still wait, so a send waits at least until
the last delayed message is due (meta 'fdl', kept while one may be delayed).
Errors: RQ_NOQUEUE; RQ_NOTFIFO ('g' on a standard queue); RQ_NEEDGROUP (no 'g'
        on a FIFO queue); RQ_TOOLARGE <index> <size> <max_size> (index from 0);
        RQ_BADDELAY <delay> <retention> when the delay exceeds the retention;
        RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, seq_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local flag = ARGV[2]
local fifo = ARGV[1] == 'g'
if ARGV[1] ~= '' and not fifo and not arg_int(ARGV[1], 0, 1209600000) then
  return bad_arg('delay', "'' (the queue's), 'g' (FIFO) or an integer from 0 to 1209600000 (ms)")
end
if flag ~= '' and flag ~= '?' and flag ~= '!' then return bad_arg('flag', "'', '?' or '!'") end
local step = fifo and 2 or 1
local n = (#ARGV - 2) / step
if n < 1 or n % 1 ~= 0 then
  return bad_arg('bodies', fifo and '1 or more group, message pairs' or '1 or more messages')
end

local cfg = redis.call('HMGET', meta_key, 'max_size', 'delay', 'retention', 'fifo', 'fdl')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
if fifo ~= (cfg[4] == '1') then
  return redis.error_reply(fifo and 'RQ_NOTFIFO' or 'RQ_NEEDGROUP')
end
local max_size = tonumber(cfg[1])
for i = 1, n do
  local m = ARGV[2 + step * i]
  if fifo then
    local g = ARGV[1 + step * i]
    if #g < 1 or #g > 512 then return bad_arg('group', 'a group of 1 to 512 bytes') end
  end
  local size = message_size(m)
  if not size then
    return bad_arg('bodies', string.format('encoded messages (message %d is not)', i - 1))
  end
  if size > max_size then
    return redis.error_reply(string.format('RQ_TOOLARGE %d %d %d', i - 1, size, max_size))
  end
end

local delay = tonumber(ARGV[1] ~= '' and not fifo and ARGV[1] or cfg[2])
if delay > tonumber(cfg[3]) then
  return redis.error_reply(string.format('RQ_BADDELAY %d %s', delay, cfg[3]))
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local visible_at = now + delay
local stamp = string.format('%013d', now) .. flag
if delay > 0 then -- its retention starts when it becomes visible (receive.lua)
  stamp = string.format('D%d|', visible_at) .. stamp
end
local last = redis.call('INCRBY', seq_key, n)
if fifo then
  local gm_key, gr_key, gf_key = KEYS[6], KEYS[7], KEYS[8]
  -- nothing overtakes a message still waiting for a longer delay (see above)
  local floor = tonumber(cfg[5] or '')
  if floor and floor > visible_at then visible_at = floor end
  local delayed = visible_at > now
  if delayed then
    redis.call('HSET', meta_key, 'fdl', visible_at)
  elseif floor then
    redis.call('HDEL', meta_key, 'fdl')
  end
  local state = delayed and string.format('D%d', visible_at) or 'G'
  local stamp = string.format('%013d', now) .. flag
  local h, z, heads = {}, {}, {}
  for i = 1, n do
    local id, g = id_of(last - n + i), ARGV[1 + 2 * i]
    h[2 * i - 1] = id
    h[2 * i] = state .. fifo_tail(g) .. stamp .. ARGV[2 + 2 * i]
    if delayed then
      z[2 * i - 1] = visible_at
      z[2 * i] = id
    else
      z[2 * i - 1] = 0
      z[2 * i] = fifo_prefix(g) .. id
      if not heads[g] then heads[g] = last - n + i end
    end
  end
  redis.call('HSET', msgs_key, unpack(h))
  redis.call('ZADD', delayed and vis_key or gm_key, unpack(z))
  -- A group with nothing in flight is ready; one already ready keeps its
  -- (older) head.
  for g, number in pairs(heads) do
    if redis.call('HEXISTS', gf_key, g) == 0 then redis.call('ZADD', gr_key, 'NX', number, g) end
  end
  redis.call('HINCRBY', meta_key, 'sent_total', n)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, 1)
  end
  return {string.format('%d', last), now}
end
local h, z = {}, {}
for i = 1, n do
  local id = id_of(last - n + i)
  h[2 * i - 1] = id
  h[2 * i] = stamp .. ARGV[i + 2]
  z[2 * i - 1] = visible_at
  z[2 * i] = id
end
redis.call('HSET', msgs_key, unpack(h))
redis.call('ZADD', vis_key, unpack(z))
redis.call('HINCRBY', meta_key, 'sent_total', n)
if redis.call('LLEN', wake_key) == 0 then
  redis.call('RPUSH', wake_key, 1)
end
return {string.format('%d', last), now}
