--[[ subscribe: create a subscription of a topic (a queue with its own
dead-letter queue) or check its attributes, and push its expiry to now + ttl.

Expired subscriptions the client saw are reaped first (re-checked here),
including this one: a subscription not refreshed within its TTL is gone
with its backlog, and subscribing again starts it afresh.

KEYS[1] subs      zset: subscription name -> expires-at (ms)
KEYS[2] version   string: bumped when a subscription joins or leaves
KEYS[3] seq       string: the topic's id counter (read only)
KEYS[4] meta      hash: the subscription's attributes and counters
KEYS[5] dlq_meta  hash: its dead-letter queue's
KEYS[6 + 12(i-1) ..] per expired candidate i: the 12 keys as in unsubscribe.lua

ARGV[1..10] the attributes in ATTR_FIELDS order (see _prelude.lua)
ARGV[11] dlq retention (ms)
ARGV[12] ttl (ms)
ARGV[13] the subscription's name
ARGV[14] 'r' for a refresh: an existing subscription's stored attributes stand
         (set_attributes may have changed them); '' compares them
ARGV[15..] expired candidates' names, in the order of their keys

Reply: 1 when it joined now, 0 when it was refreshed, 2 when refreshed but made
by rqueue 0.1 (the client then runs upgrade.lua).
Errors: RQ_EXISTS <the 10 stored attributes> (as create_queue.lua)
        (before any reaping: an error changes nothing); RQ_BADARG.
]]
local subs_key, version_key, meta_key, dlq_meta_key = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
local want = attributes_from_argv(1)
local dlq_retention = ARGV[11]
local name = ARGV[13]
local refused = attributes_refusal(want)
if refused then return refused end
if want.fifo ~= '' then return bad_arg('fifo', "'' (a subscription is not a FIFO queue)") end
if not arg_int(dlq_retention, 60000, 1209600000) then
  return bad_arg('dlq_retention', 'an integer from 60000 to 1209600000 (ms)')
end
local ttl = arg_int(ARGV[12], 50, 2592000000)
if not ttl then return bad_arg('ttl', 'an integer from 50 to 2592000000 (ms)') end
if not (name and #name <= 80 and string.find(name, '^[A-Za-z0-9_%-]+$')) then
  return bad_arg('name', '1 to 80 characters of A-Z, a-z, 0-9, _ and -')
end
if #KEYS ~= 5 + 12 * (#ARGV - 14) then
  return bad_arg('expired', 'one name per 12 subscription keys')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Other attributes are refused before any reaping: an error changes nothing.
-- This subscription counts as existing unless it is reaped below.
local cur = attributes_stored(meta_key)
local score = redis.call('ZSCORE', subs_key, name)
local exists = cur and score
if exists and tonumber(score) <= now then
  for i = 15, #ARGV do
    if ARGV[i] == name then exists = false end
  end
end
local refresh = ARGV[14]
if refresh ~= '' and refresh ~= 'r' then return bad_arg('mode', "'' or 'r' (refresh)") end
if exists and refresh == '' then
  local differs = attributes_exist_error(want, cur)
  if differs then return differs end
end

local changed = false
for i = 15, #ARGV do
  local s = redis.call('ZSCORE', subs_key, ARGV[i])
  if s and tonumber(s) <= now then
    local base = 6 + 12 * (i - 15)
    redis.call('ZREM', subs_key, ARGV[i])
    redis.call('UNLINK', unpack(KEYS, base, base + 11))
    changed = true
  end
end

local joined = 0
if not exists then
  -- new, or left over without its membership: start afresh
  redis.call('DEL', meta_key, dlq_meta_key)
  attributes_write(meta_key, want)
  redis.call('HSET', meta_key, 'created_at', now)
  redis.call('HSET', dlq_meta_key, 'vt', want.vt, 'delay', 0, 'retention', dlq_retention,
    'max_size', want.max_size, 'created_at', now, 'dlq', 1)
  -- receipt tokens count up from the clock in microseconds (create_queue.lua);
  -- ids come from the topic's seq, from 1, kept as long as the topic
  local tok = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', meta_key, 'tok', tok, 'v', 2)
  redis.call('HSET', dlq_meta_key, 'tok', tok, 'v', 2)
  joined = 1
  changed = true
end
if exists and not redis.call('HGET', meta_key, 'v') then
  -- made by 0.1: tokens go on from past every one it issued (they came from the
  -- topic's seq); the client runs upgrade.lua, which sets 'v'
  -- (a receive before the upgrade may have started 'tok' from 1: never go back)
  local tok = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(redis.call('GET', KEYS[3]) or '0') + 1)
  for _, key in ipairs({meta_key, dlq_meta_key}) do
    local cur = tonumber(redis.call('HGET', key, 'tok') or '0')
    redis.call('HSET', key, 'tok', string.format('%d', math.max(tok, cur)))
  end
  joined = 2
end
redis.call('ZADD', subs_key, now + ttl, name)
redis.call('HSET', meta_key, 'ttl', ttl)
if changed then redis.call('INCR', version_key) end
return joined
