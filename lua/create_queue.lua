--[[ create_queue: create a queue and its dead-letter queue, or check that an
existing queue has the same attributes.

KEYS[1] meta      hash: the queue's attributes and counters
KEYS[2] dlq_meta  hash: the dead-letter queue's attributes and counters
KEYS[3] seq       string: the id counter shared by the queue and its DLQ

ARGV[1] visibility_timeout (ms)
ARGV[2] delay (ms)
ARGV[3] retention (ms)
ARGV[4] max_message_size (bytes)
ARGV[5] max_receive_count ('' = none)
ARGV[6] dlq retention (ms)

Reply: 1 when created, 0 when it existed with the same attributes, 2 when it
existed so but was created by rqueue 0.1 (meta has no 'v'): the client then
runs upgrade.lua until it is done.
Errors: RQ_EXISTS <vt> <delay> <retention> <max_size> <max_receive_count>
        when it exists with other attributes; RQ_BADARG (see _prelude.lua).
]]
local meta_key, dlq_meta_key, seq_key = KEYS[1], KEYS[2], KEYS[3]
local vt, delay, retention, max_size, mrc, dlq_retention =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local refused = bad_attributes(vt, delay, retention, max_size, mrc, dlq_retention)
if refused then return refused end

local cur = redis.call('HMGET', meta_key, 'vt', 'delay', 'retention', 'max_size', 'mrc')
if cur[1] then
  local cur_mrc = cur[5] or ''
  if cur[1] == vt and cur[2] == delay and cur[3] == retention and cur[4] == max_size
      and cur_mrc == mrc then
    if not redis.call('HGET', meta_key, 'v') then
      -- created by 0.1: receipt tokens go on from past every token it issued (they
      -- came from seq), and upgrade.lua rewrites its messages, then sets 'v'
      -- (a receive before the upgrade may have started 'tok' from 1: never go back)
      local t = redis.call('TIME')
      local tok = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(redis.call('GET', seq_key) or '0') + 1)
      for _, key in ipairs({meta_key, dlq_meta_key}) do
        local cur = tonumber(redis.call('HGET', key, 'tok') or '0')
        redis.call('HSET', key, 'tok', string.format('%d', math.max(tok, cur)))
      end
      return 2
    end
    return 0
  end
  return redis.error_reply(string.format('RQ_EXISTS %s %s %s %s %s',
    cur[1], cur[2], cur[3], cur[4], cur_mrc == '' and '-' or cur_mrc))
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', meta_key, 'vt', vt, 'delay', delay, 'retention', retention,
  'max_size', max_size, 'created_at', now)
if mrc ~= '' then
  redis.call('HSET', meta_key, 'mrc', mrc)
end
redis.call('HSET', dlq_meta_key, 'vt', vt, 'delay', 0, 'retention', dlq_retention,
  'max_size', max_size, 'created_at', now, 'dlq', 1)
-- Ids count from 1 in seq; one delete_queue kept for a day carries on. Receipt
-- tokens count from the server's clock in microseconds (one per receive call
-- that delivers, far slower than the clock), so a queue created again never
-- reissues a receipt of its past life.
redis.call('PERSIST', seq_key)
local tok = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('HSET', meta_key, 'tok', tok, 'v', 2)
redis.call('HSET', dlq_meta_key, 'tok', tok, 'v', 2)
return 1
