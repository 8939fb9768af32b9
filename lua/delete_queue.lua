--[[ delete_queue: delete a queue, its dead-letter queue and every message.

KEYS[1] meta  KEYS[2] dlq_meta  KEYS[3..n-1] every other key of both queues
              (msgs, vis, wake, why, and the 'state' of the layout before 0.2)
KEYS[n] seq   string: the id counter, kept for a day

Reply: 1 when the queue existed, 0 when it did not (nothing is deleted then).

Ids count up in seq from 1. It outlives the queue by a day: a queue created
again within it carries on (create_queue.lua keeps it), so no id is issued
twice while anything of the past life can still name it (reply keys live
minutes, a lease at most 12 h). Receipts never repeat: their tokens count
from the server's clock at creation (meta 'tok', see receive.lua).
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('UNLINK', unpack(KEYS, 1, #KEYS - 1))
redis.call('PEXPIRE', KEYS[#KEYS], 86400000)
return 1
