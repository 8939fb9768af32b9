--[[ delete_queue: delete a queue, its dead-letter queue and every message.

KEYS[1] meta  KEYS[2] dlq_meta  KEYS[3..n-1] every other key of both queues
              (msgs, vis, wake, why, and the 'state' of the layout before 0.2)
KEYS[n] seq   string: the id counter, kept

Reply: 1 when the queue existed, 0 when it did not (nothing is deleted then).

Ids count up in seq from 1, and seq outlives the queue (one small string per
deleted name): a queue created again under the name carries on, so an id
never names two messages, whatever still refers to one of its past life (a
tracked send's listener, a reply key, a lease, a user's records). Receipts
never repeat either: their tokens count from the server's clock at creation
(meta 'tok', see receive.lua).
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('UNLINK', unpack(KEYS, 1, #KEYS - 1))
redis.call('PERSIST', KEYS[#KEYS]) -- one an older version left with a TTL
return 1
