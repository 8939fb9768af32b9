--[[ pause: pause or resume receiving from a queue (sends are still accepted).

KEYS[1] meta  hash: attributes and counters; 'paused' = '1' while paused
KEYS[2] wake  list: wake-up token for waiting receivers

ARGV[1] '1' to pause, '0' to resume

While paused, receive.lua hands out nothing and tells waiting receivers to wait
for a wake-up; resuming pushes one, so they look again at once.
Reply: 1 when the state changed, 0 when it already was so.
Errors: RQ_NOQUEUE; RQ_BADARG.
]]
local meta_key, wake_key = KEYS[1], KEYS[2]
local on = ARGV[1]
if on ~= '1' and on ~= '0' then return bad_arg('paused', "'1' (pause) or '0' (resume)") end
if redis.call('EXISTS', meta_key) == 0 then
  return redis.error_reply('RQ_NOQUEUE')
end
local was = redis.call('HGET', meta_key, 'paused') == '1'
if on == '1' then
  if was then return 0 end
  redis.call('HSET', meta_key, 'paused', '1')
  return 1
end
if not was then return 0 end
redis.call('HDEL', meta_key, 'paused')
if redis.call('LLEN', wake_key) == 0 then redis.call('RPUSH', wake_key, 1) end
return 1
