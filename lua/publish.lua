--[[ publish: copy a batch of messages into every live subscription of a
topic, all or nothing.

The client passes the subscriptions it last read with their version; if the
set changed since (a subscribe or unsubscribe bumps the version) the script
writes nothing and replies 'stale', and the client reads again. A
subscription past its expiry gets nothing and is reported for reaping.

KEYS[1] subs     zset: subscription name -> expires-at (ms)
KEYS[2] version  string
KEYS[3] seq      string: the topic's id counter (one id per message, the same
                 in every subscription)
KEYS[4 + 4(i-1) ..] per subscription i: meta, msgs, vis, wake

ARGV[1] the version the client read
ARGV[2] m, the number of subscriptions
ARGV[3 .. m+2] their names, in the order of their keys
ARGV[m+3 ..] encoded messages (kind byte, attributes, body)

Reply: {'ok', last_id, deliveries, {expired names}} or {'stale'}.
Errors: RQ_TOOLARGE <index> <size> <max_size> (nothing written); RQ_BADARG.
]]
local subs_key, version_key, seq_key = KEYS[1], KEYS[2], KEYS[3]
local m = arg_int(ARGV[2], 0, 100000)
if not m or #KEYS ~= 3 + 4 * m then
  return bad_arg('subscriptions', 'their number, with 4 keys each')
end
local n = #ARGV - m - 2
if n < 1 then return bad_arg('bodies', '1 or more messages') end
local sizes = {}
for j = 1, n do
  sizes[j] = message_size(ARGV[m + 2 + j])
  if not sizes[j] then
    return bad_arg('bodies', string.format('encoded messages (message %d is not)', j - 1))
  end
end

if (redis.call('GET', version_key) or '0') ~= ARGV[1] then
  return {'stale'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local live, expired = {}, {}
if m > 0 then
  local names = {unpack(ARGV, 3, m + 2)}
  local scores = redis.call('ZMSCORE', subs_key, unpack(names))
  for i = 1, m do
    local s = scores[i]
    if s and tonumber(s) > now then
      local base = 4 + 4 * (i - 1)
      local cfg = redis.call('HMGET', KEYS[base], 'max_size', 'delay')
      if cfg[1] then
        live[#live + 1] = {base, tonumber(cfg[1]), tonumber(cfg[2])}
      end
    elseif s then
      expired[#expired + 1] = names[i]
    end
  end
end

for j = 1, n do
  for _, sub in ipairs(live) do
    if sizes[j] > sub[2] then
      return redis.error_reply(string.format('RQ_TOOLARGE %d %d %d', j - 1, sizes[j], sub[2]))
    end
  end
end

local last = redis.call('INCRBY', seq_key, n)
local stamp = string.format('%013d', now)
local h = {}
for j = 1, n do
  h[2 * j - 1] = id_of(last - n + j)
  h[2 * j] = stamp .. ARGV[m + 2 + j]
end
for _, sub in ipairs(live) do
  local base, delay = sub[1], sub[3]
  local z = {}
  for j = 1, n do
    z[2 * j - 1] = now + delay
    z[2 * j] = h[2 * j - 1]
  end
  local stored = h
  if delay > 0 then -- its retention starts when it becomes visible (receive.lua)
    local since = string.format('D%d|', now + delay)
    stored = {}
    for j = 1, n do
      stored[2 * j - 1] = h[2 * j - 1]
      stored[2 * j] = since .. h[2 * j]
    end
  end
  redis.call('HSET', KEYS[base + 1], unpack(stored))
  redis.call('ZADD', KEYS[base + 2], unpack(z))
  redis.call('HINCRBY', KEYS[base], 'sent_total', n)
  if redis.call('LLEN', KEYS[base + 3]) == 0 then
    redis.call('RPUSH', KEYS[base + 3], 1)
  end
end
return {'ok', string.format('%d', last), #live * n, expired}
