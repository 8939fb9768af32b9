--[[ set_attributes: change attributes of a live queue, for every host at once.

KEYS[1] meta  hash: the queue's attributes and counters
KEYS[2] wake  list: wake-up token for waiting receivers

ARGV[1..] pairs: an attribute's meta field (see ATTR_FIELDS in _prelude.lua;
          not 'fifo') and its new value ('' = none/off)

The changes are merged into the stored attributes and the whole set is
checked before anything is written: a bad value changes nothing. Waiting
receivers are woken, so a raised limit or a shorter delay takes effect at once.

Reply: the 10 attributes in ATTR_FIELDS order after the change ('' = none).
Errors: RQ_NOQUEUE; RQ_BADARG (an unknown or unchangeable field, a bad value).
]]
local meta_key, wake_key = KEYS[1], KEYS[2]
if #ARGV == 0 or #ARGV % 2 == 1 then return bad_arg('changes', 'pairs of field and value') end
local a = attributes_stored(meta_key)
if not a then return redis.error_reply('RQ_NOQUEUE') end
local is_dlq = redis.call('HGET', meta_key, 'dlq') == '1'
for i = 1, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  if a[f] == nil then return bad_arg('field', 'one of ' .. table.concat(ATTR_FIELDS, ', ')) end
  if f == 'fifo' and v ~= a.fifo then return bad_arg('fifo', 'unchanged: a queue is FIFO or not for life') end
  if is_dlq and (f == 'mrc' or f == 'cbd') and v ~= '' then
    return bad_arg(ATTR_SHOWN[f], "'' (none) on a dead-letter queue")
  end
  a[f] = v
end
local refused = attributes_refusal(a)
if refused then return refused end
attributes_write(meta_key, a)
if redis.call('LLEN', wake_key) == 0 then redis.call('RPUSH', wake_key, 1) end
local out = {}
for i, f in ipairs(ATTR_FIELDS) do out[i] = a[f] end
return out
