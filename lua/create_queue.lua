--[[ create_queue: create a queue and its dead-letter queue, or check that an
existing queue has the same attributes.

KEYS[1] meta      hash: the queue's attributes and counters
KEYS[2] dlq_meta  hash: the dead-letter queue's attributes and counters
KEYS[3] seq       string: the id counter shared by the queue and its DLQ

ARGV[1..10] the attributes in ATTR_FIELDS order (see _prelude.lua): vt, delay,
            retention (ms), max_size (bytes), mrc, dw (ms), fifo, cbd, rl, mif
            ('' = none)
ARGV[11] dlq retention (ms)

Reply: 1 when created, 0 when it existed with the same attributes, 2 when it
existed so but was created by rqueue 0.1 (meta has no 'v'): the client then
runs upgrade.lua until it is done.
Errors: RQ_EXISTS <name=value of each stored attribute> when it exists with
        other attributes; RQ_BADARG (see _prelude.lua).
]]
local meta_key, dlq_meta_key, seq_key = KEYS[1], KEYS[2], KEYS[3]
local want = attributes_from_argv(1)
local dlq_retention = ARGV[11]
local refused = attributes_refusal(want)
if refused then return refused end
if not arg_int(dlq_retention, 60000, 1209600000) then
  return bad_arg('dlq_retention', 'an integer from 60000 to 1209600000 (ms)')
end

local cur = attributes_stored(meta_key)
if cur then
  local differs = attributes_exist_error(want, cur)
  if not differs then
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
  return differs
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
attributes_write(meta_key, want)
redis.call('HSET', meta_key, 'created_at', now)
redis.call('HSET', dlq_meta_key, 'vt', want.vt, 'delay', 0, 'retention', dlq_retention,
  'max_size', want.max_size, 'created_at', now, 'dlq', 1)
-- Ids count from 1 in seq; one delete_queue kept for a day carries on. Receipt
-- tokens count from the server's clock in microseconds (one per receive call
-- that delivers, far slower than the clock), so a queue created again never
-- reissues a receipt of its past life.
redis.call('PERSIST', seq_key)
local tok = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
redis.call('HSET', meta_key, 'tok', tok, 'v', 2)
redis.call('HSET', dlq_meta_key, 'tok', tok, 'v', 2)
return 1
