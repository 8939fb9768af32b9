--[[ _prelude: prepended to every script by rqueue/_scripts.py.

Every script checks its ARGV before it reads or writes anything: a bad
argument changes nothing and is refused as 'RQ_BADARG <argument> <what it
must be>', which rqueue raises as InvalidParameter naming the argument.
Only the client calls the scripts, and it validates first; these checks
keep a raw EVALSHA (or a client bug) from writing half a change or storing
a value the other scripts cannot read.
]]

-- A canonical integer string from lo to hi, as a number; else nil. Not
-- tonumber alone: it takes 'nan', 'inf', '1e3', '0x10', ' 5' and '-0'.
local function arg_int(v, lo, hi)
  if v and #v <= 15 and (v == '0' or string.find(v, '^[1-9]%d*$')) then
    local x = tonumber(v)
    if x >= lo and x <= hi then return x end
  end
  return nil
end

local function bad_arg(name, what)
  return redis.error_reply('RQ_BADARG ' .. name .. ' ' .. what)
end

-- The size (body plus attributes) of a message as send and publish take it:
-- a kind byte s, b or j; or S, B or J and then '<attributes length>:'.
-- nil for anything else.
local function message_size(m)
  local kind = string.byte(m, 1)
  if kind == 106 or kind == 115 or kind == 98 then return #m - 1 end
  if kind == 74 or kind == 83 or kind == 66 then
    local digits = string.match(m, '^.(%d+):')
    if digits and #digits <= 9 then
      local size = #m - 2 - #digits
      if tonumber(digits) <= size then return size end
    end
  end
  return nil
end

-- A queue's attributes, as create_queue, subscribe and set_attributes take them
-- (in this order) and as meta stores them: '' (absent from meta) is none/off.
-- vt, delay, retention and dw in ms; rl a decimal number of messages a second.
-- A queue made before an attribute existed reads its default (ATTR_DEFAULT).
local ATTR_FIELDS = {'vt', 'delay', 'retention', 'max_size', 'mrc', 'dw', 'fifo', 'cbd', 'rl', 'mif'}
local ATTR_DEFAULT = {dw = '300000'}

-- A decimal number > 0 and <= hi as rqueue writes it ('2', '0.5', '1e-05' is
-- refused): digits, an optional fraction; else nil.
local function arg_rate(v, hi)
  if v and #v <= 24 and string.find(v, '^%d+%.?%d*$') then
    local x = tonumber(v)
    if x and x > 0 and x <= hi then return x end
  end
  return nil
end

-- The error for attributes a (field -> value string, see ATTR_FIELDS) outside
-- the ranges rqueue/_protocol/attributes.py allows; nil when all fit.
local function attributes_refusal(a)
  if not arg_int(a.vt, 0, 43200000) then
    return bad_arg('visibility_timeout', 'an integer from 0 to 43200000 (ms)')
  end
  local ret = arg_int(a.retention, 60000, 1209600000)
  if not ret then return bad_arg('retention', 'an integer from 60000 to 1209600000 (ms)') end
  local delay = arg_int(a.delay, 0, 1209600000)
  if not delay then return bad_arg('delay', 'an integer from 0 to the retention (ms)') end
  if delay > ret then return redis.error_reply(string.format('RQ_BADDELAY %d %d', delay, ret)) end
  if not arg_int(a.max_size, 1, 16777216) then
    return bad_arg('max_message_size', 'an integer from 1 to 16777216 (bytes)')
  end
  if a.mrc ~= '' and not arg_int(a.mrc, 1, 1000) then
    return bad_arg('max_receive_count', "'' (none) or an integer from 1 to 1000")
  end
  if not arg_int(a.dw, 1000, 604800000) then
    return bad_arg('deduplication_window', 'an integer from 1000 to 604800000 (ms)')
  end
  if a.fifo ~= '' and a.fifo ~= '1' then return bad_arg('fifo', "'' or '1'") end
  if a.cbd ~= '' and a.cbd ~= '1' then return bad_arg('content_based_deduplication', "'' or '1'") end
  if a.rl ~= '' and not arg_rate(a.rl, 1000000) then
    return bad_arg('rate_limit', "'' (none) or a decimal number > 0 and <= 1000000")
  end
  if a.mif ~= '' and not arg_int(a.mif, 1, 1000000000) then
    return bad_arg('max_in_flight', "'' (none) or an integer from 1 to 1000000000")
  end
  return nil
end

-- Attributes from ARGV[first ..] in ATTR_FIELDS order (nil entries stay nil).
local function attributes_from_argv(first)
  local a = {}
  for i, f in ipairs(ATTR_FIELDS) do a[f] = ARGV[first + i - 1] end
  return a
end

-- The attributes stored in meta_key (defaults filled in), or nil without a queue.
local function attributes_stored(meta_key)
  local cur = redis.call('HMGET', meta_key, unpack(ATTR_FIELDS))
  if not cur[1] then return nil end
  local a = {}
  for i, f in ipairs(ATTR_FIELDS) do a[f] = cur[i] or ATTR_DEFAULT[f] or '' end
  return a
end

-- nil when a and b agree, else the RQ_EXISTS error showing b as the Python
-- API names it ('visibility_timeout=30 ... max_in_flight=None').
local ATTR_SHOWN = {vt = 'visibility_timeout', delay = 'delay', retention = 'retention',
  max_size = 'max_message_size', mrc = 'max_receive_count', dw = 'deduplication_window',
  fifo = 'fifo', cbd = 'content_based_deduplication', rl = 'rate_limit', mif = 'max_in_flight'}
local ATTR_SECONDS = {vt = true, delay = true, retention = true, dw = true}
local function attributes_exist_error(a, b)
  local same, shown = true, {}
  for i, f in ipairs(ATTR_FIELDS) do
    if a[f] ~= b[f] then same = false end
    local v = b[f]
    if f == 'fifo' or f == 'cbd' then
      v = v == '1' and 'True' or 'False'
    elseif v == '' then
      v = 'None'
    elseif ATTR_SECONDS[f] then
      v = string.format('%.15g', tonumber(v) / 1000)
    end
    shown[i] = ATTR_SHOWN[f] .. '=' .. v
  end
  if same then return nil end
  return redis.error_reply('RQ_EXISTS ' .. table.concat(shown, ' '))
end

-- Store attributes a in meta_key: set fields are written, '' ones removed.
local function attributes_write(meta_key, a)
  local set, unset = {}, {}
  for _, f in ipairs(ATTR_FIELDS) do
    if a[f] == '' then
      unset[#unset + 1] = f
    else
      set[#set + 1] = f
      set[#set + 1] = a[f]
    end
  end
  redis.call('HSET', meta_key, unpack(set))
  if #unset > 0 then redis.call('HDEL', meta_key, unpack(unset)) end
end

-- A message id from its number: the digits behind their count ('1'..'8',
-- then '90'..'99' for 9 to 18 digits), so ids sort as strings in the order
-- they were issued and a sorted set breaks equal scores first in, first out.
-- Short: a queue's ids count from 1 (see create_queue.lua).
local ID_PREFIX = {'1', '2', '3', '4', '5', '6', '7', '8',
  '90', '91', '92', '93', '94', '95', '96', '97', '98', '99'}
local function id_of(n)
  local s = string.format('%d', n)
  return ID_PREFIX[#s] .. s
end

-- A stored message is '<sent_at: 13 digits>[flag]<kind>...' (see codec.py),
-- once received behind a header 'R<token>:<receive_count>:<first_received_at>
-- [:<visible_since>]|' that the receive script writes: the token is the
-- receive call's (one per call, from seq), so '<id>.<token>' names one
-- delivery, and the header is the only per-message state. Before its first
-- receive, a message sent with a delay or redriven carries 'D<visible_since>|'
-- instead (when its retention starts). A FIFO queue's message always has a
-- header, which ends in its group: 'G~<len>:<group>|' until its first receive
-- (or 'D<since>~<len>:<group>|'), then 'R...~<len>:<group>|'; the group's byte
-- length first, so a group may hold any byte ('|' too). header_end gives where
-- a header ends (the '|'), 0 without one.
local function header_end(m)
  local b = string.byte(m, 1)
  if b ~= 82 and b ~= 68 and b ~= 71 then return 0 end -- 'R', 'D', 'G'
  local len, p = string.match(m, '^[RDG][%d:]*~(%d+):()')
  if p then return p + tonumber(len) end
  return string.find(m, '|', 2, true) or 0
end

-- FIFO queues (see above): the parts of a stored message's header: its state
-- ('G', 'D<since>' or 'R<token>:<rc>:<first>[:<since>]'), its group and the
-- message behind the header; nil for a message without a group.
local function fifo_parts(m)
  local state, len, p = string.match(m, '^([RDG][%d:]*)~(%d+):()')
  if not p then return nil end
  local e = p + tonumber(len)
  if string.byte(m, e) ~= 124 then return nil end
  return state, string.sub(m, p, e - 1), string.sub(m, e + 1)
end

-- Only the group of a FIFO message (nil without one): no copy of the rest.
local function fifo_group(m)
  local len, p = string.match(m, '^[RDG][%d:]*~(%d+):()')
  if not p then return nil end
  local e = p + tonumber(len)
  if string.byte(m, e) ~= 124 then return nil end
  return string.sub(m, p, e - 1)
end

-- The group suffix of a FIFO header: '~<len>:<group>|'.
local function fifo_tail(group)
  return '~' .. #group .. ':' .. group .. '|'
end

-- A FIFO queue keeps its messages that wait for their turn in 'gm', a sorted
-- set of equal scores ordered by member: '<len>:<group>' then the id, so one
-- group's messages sit together in send order (ids sort as strings in the
-- order they were issued). fifo_prefix gives a group's part; fifo_head up to n
-- of its first members' ids, in order.
local function fifo_prefix(group)
  return #group .. ':' .. group
end

local function fifo_head(gm_key, group, n)
  local p = fifo_prefix(group)
  local members = redis.call('ZRANGE', gm_key, '[' .. p, '(' .. p .. ':', 'BYLEX', 'LIMIT', 0, n)
  for i, member in ipairs(members) do members[i] = string.sub(member, #p + 1) end
  return members
end

-- The number an id was made from (see id_of).
local function id_number(id)
  if string.byte(id, 1) == 57 then return tonumber(string.sub(id, 3)) end -- '9x...'
  return tonumber(string.sub(id, 2))
end

-- After a group's state changed: it is ready ('gr', scored by the number of
-- its first waiting message, so the oldest head goes first) when nothing of
-- it is in flight ('gf': group -> messages in flight) and a message of it
-- waits; else it is not in 'gr'. Returns true when it became ready. free:
-- true when the caller knows nothing of the group is in flight and that the
-- group was not ready (its last message in flight just ended), which saves
-- the reads.
local function fifo_settle(gm_key, gr_key, gf_key, group, free)
  if not free and redis.call('HEXISTS', gf_key, group) == 1 then
    redis.call('ZREM', gr_key, group)
    return false
  end
  local head = fifo_head(gm_key, group, 1)
  if #head == 0 then
    if not free then redis.call('ZREM', gr_key, group) end
    return false
  end
  return redis.call('ZADD', gr_key, id_number(head[1]), group) == 1
end

-- k (default 1) of a group's messages in flight ended (deleted, rejected, or
-- back in gm).
-- Returns how many are still in flight.
local function fifo_release(gf_key, group, k)
  local left = redis.call('HINCRBY', gf_key, group, -(k or 1))
  if left <= 0 then redis.call('HDEL', gf_key, group) end
  return left
end
