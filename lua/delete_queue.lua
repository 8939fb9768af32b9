--[[ delete_queue: delete a queue, its dead-letter queue and every message.

KEYS[1] meta  KEYS[2] dlq_meta  KEYS[3..] every other key of both queues
              (msgs, vis, state, wake, why, and the shared seq)

Reply: 1 when the queue existed, 0 when it did not (nothing is deleted then).

Ids and receipt tokens come from seq, seeded with the server's time in
microseconds. If the counter is ahead of the clock (a burst right after
creating), it is kept until the clock passes it, so a queue created again at
once carries on from it and never reissues an old receipt.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local seq_key = KEYS[#KEYS]
local seq = tonumber(redis.call('GET', seq_key) or '0') or 0
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
if seq >= now_us then
  n = n - 1
  redis.call('PEXPIRE', seq_key, math.floor((seq - now_us) / 1000) + 2)
end
redis.call('UNLINK', unpack(KEYS, 1, n))
return 1
