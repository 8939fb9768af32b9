--[[ unsubscribe: remove subscriptions of a topic with their backlog and
dead letters; with mode 'expired', only those past their expiry (reaping).

KEYS[1] subs     zset: subscription name -> expires-at (ms)
KEYS[2] version  string: bumped when anything is removed
KEYS[3 + 12(i-1) ..] per subscription i: meta, msgs, vis, state, wake, why,
                 and its dead-letter queue's meta, msgs, vis, state, wake, why

ARGV[1] 'expired' or 'all'
ARGV[2..] the subscription names, in the order of their keys

Reply: the names removed.
Errors: RQ_BADARG.
]]
local subs_key, version_key = KEYS[1], KEYS[2]
if ARGV[1] ~= 'expired' and ARGV[1] ~= 'all' then
  return bad_arg('mode', "'expired' or 'all'")
end
if #KEYS ~= 2 + 12 * (#ARGV - 1) then
  return bad_arg('names', 'one per 12 subscription keys')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local only_expired = ARGV[1] == 'expired'
local removed = {}
for i = 2, #ARGV do
  local name = ARGV[i]
  local s = redis.call('ZSCORE', subs_key, name)
  if s and (not only_expired or tonumber(s) <= now) then
    local base = 3 + 12 * (i - 2)
    redis.call('ZREM', subs_key, name)
    redis.call('UNLINK', unpack(KEYS, base, base + 11))
    removed[#removed + 1] = name
  end
end
if #removed > 0 then
  redis.call('INCR', version_key)
end
return removed
