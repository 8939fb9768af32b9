--[[ send: store a batch of messages, all or nothing.

KEYS[1] meta   hash: attributes (max_size, delay) and counters
KEYS[2] msgs   hash: id -> ['D<visible_at>|' if delayed] sent_at (13 digits)
               [flag] encoded message (see _prelude.lua)
KEYS[3] vis    zset: id scored by visible-at (ms)
KEYS[4] seq    string: id counter
KEYS[5] wake   list: wake-up token for waiting receivers

ARGV[1] delay in ms, or '' for the queue's default
ARGV[2] tracking flag stored before every message: '' (untracked), '?'
        (a request: its sender blocks on a reply key) or '!' (events published)
ARGV[3..] encoded messages: one kind byte, then for an upper-case kind
          '<attributes length>:<attributes>', then the body

Every size is checked against max_size before anything is written.
Reply: {last, sent_at}; the batch's ids are id_of(last-n+1) .. id_of(last)
(see _prelude.lua).
Errors: RQ_NOQUEUE; RQ_TOOLARGE <index> <size> <max_size> (index from 0);
        RQ_BADDELAY <delay> <retention> when the delay exceeds the retention;
        RQ_BADARG.
]]
local meta_key, msgs_key, vis_key, seq_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local flag = ARGV[2]
if ARGV[1] ~= '' and not arg_int(ARGV[1], 0, 1209600000) then
  return bad_arg('delay', "'' (the queue's) or an integer from 0 to 1209600000 (ms)")
end
if flag ~= '' and flag ~= '?' and flag ~= '!' then return bad_arg('flag', "'', '?' or '!'") end
local n = #ARGV - 2
if n < 1 then return bad_arg('bodies', '1 or more messages') end

local cfg = redis.call('HMGET', meta_key, 'max_size', 'delay', 'retention')
if not cfg[1] then
  return redis.error_reply('RQ_NOQUEUE')
end
local max_size = tonumber(cfg[1])
for i = 3, n + 2 do
  local size = message_size(ARGV[i])
  if not size then
    return bad_arg('bodies', string.format('encoded messages (message %d is not)', i - 3))
  end
  if size > max_size then
    return redis.error_reply(string.format('RQ_TOOLARGE %d %d %d', i - 3, size, max_size))
  end
end

local delay = tonumber(ARGV[1] ~= '' and ARGV[1] or cfg[2])
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
