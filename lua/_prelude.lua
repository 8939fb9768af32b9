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

-- The error for queue attributes (create_queue's and subscribe's ARGV[1..6])
-- outside the ranges rqueue/_core.py create_queue allows; nil when all fit.
local function bad_attributes(vt, delay, retention, max_size, mrc, dlq_retention)
  if not arg_int(vt, 0, 43200000) then
    return bad_arg('visibility_timeout', 'an integer from 0 to 43200000 (ms)')
  end
  local ret = arg_int(retention, 60000, 1209600000)
  if not ret then return bad_arg('retention', 'an integer from 60000 to 1209600000 (ms)') end
  if not arg_int(delay, 0, ret) then return bad_arg('delay', 'an integer from 0 to the retention (ms)') end
  if not arg_int(max_size, 1, 16777216) then
    return bad_arg('max_message_size', 'an integer from 1 to 16777216 (bytes)')
  end
  if mrc ~= '' and not arg_int(mrc, 1, 1000) then
    return bad_arg('max_receive_count', "'' (none) or an integer from 1 to 1000")
  end
  if not arg_int(dlq_retention, 60000, 1209600000) then
    return bad_arg('dlq_retention', 'an integer from 60000 to 1209600000 (ms)')
  end
  return nil
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
-- instead (when its retention starts). header_end gives where either ends.
local function header_end(m)
  local b = string.byte(m, 1)
  if b ~= 82 and b ~= 68 then return 0 end -- 'R', 'D'
  return string.find(m, '|', 2, true) or 0
end
