--[[ subscribe: create a subscription of a topic (a queue with its own
dead-letter queue) or check its attributes, and push its expiry to now + ttl.

Expired subscriptions the client saw are reaped first (re-checked here),
including this one: a subscription not refreshed within its TTL is gone
with its backlog, and subscribing again starts it afresh.

KEYS[1] subs      zset: subscription name -> expires-at (ms)
KEYS[2] version   string: bumped when a subscription joins or leaves
KEYS[3] seq       string: the topic's id counter
KEYS[4] meta      hash: the subscription's attributes and counters
KEYS[5] dlq_meta  hash: its dead-letter queue's
KEYS[6 + 12(i-1) ..] per expired candidate i: the 12 keys as in unsubscribe.lua

ARGV[1..6] visibility_timeout, delay, retention, max_message_size (ms,
           bytes), max_receive_count ('' = none), dlq retention
ARGV[7] ttl (ms)
ARGV[8] the subscription's name
ARGV[9..] expired candidates' names, in the order of their keys

Reply: 1 when it joined now, 0 when it was refreshed.
Errors: RQ_EXISTS <vt> <delay> <retention> <max_size> <max_receive_count>.
]]
local subs_key, version_key, seq_key, meta_key, dlq_meta_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local vt, delay, retention, max_size, mrc, dlq_retention = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl, name = tonumber(ARGV[7]), ARGV[8]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local changed = false
for i = 9, #ARGV do
  local s = redis.call('ZSCORE', subs_key, ARGV[i])
  if s and tonumber(s) <= now then
    local base = 6 + 12 * (i - 9)
    redis.call('ZREM', subs_key, ARGV[i])
    redis.call('UNLINK', unpack(KEYS, base, base + 11))
    changed = true
  end
end

local joined = 0
local cur = redis.call('HMGET', meta_key, 'vt', 'delay', 'retention', 'max_size', 'mrc')
if cur[1] and redis.call('ZSCORE', subs_key, name) then
  local cur_mrc = cur[5] or ''
  if not (cur[1] == vt and cur[2] == delay and cur[3] == retention and cur[4] == max_size
      and cur_mrc == mrc) then
    if changed then redis.call('INCR', version_key) end
    return redis.error_reply(string.format('RQ_EXISTS %s %s %s %s %s',
      cur[1], cur[2], cur[3], cur[4], cur_mrc == '' and '-' or cur_mrc))
  end
else
  -- new, or left over without its membership: start afresh
  redis.call('DEL', meta_key, dlq_meta_key)
  redis.call('HSET', meta_key, 'vt', vt, 'delay', delay, 'retention', retention,
    'max_size', max_size, 'created_at', now)
  if mrc ~= '' then redis.call('HSET', meta_key, 'mrc', mrc) end
  redis.call('HSET', dlq_meta_key, 'vt', vt, 'delay', 0, 'retention', dlq_retention,
    'max_size', max_size, 'created_at', now, 'dlq', 1)
  if redis.call('EXISTS', seq_key) == 0 then
    redis.call('SET', seq_key, string.format('%d', now * 1000))
  end
  joined = 1
  changed = true
end
redis.call('ZADD', subs_key, now + ttl, name)
redis.call('HSET', meta_key, 'ttl', ttl)
if changed then redis.call('INCR', version_key) end
return joined
