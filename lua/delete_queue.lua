--[[ delete_queue: delete a queue, its dead-letter queue and every message.

KEYS[1] meta  KEYS[2] dlq_meta  KEYS[3..] every other key of both queues
              (msgs, vis, state, wake, why, and the shared seq)

Reply: 1 when the queue existed, 0 when it did not (nothing is deleted then).
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('UNLINK', unpack(KEYS))
return 1
