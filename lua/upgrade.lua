--[[ upgrade: fold the per-message state of the layout before 0.2 into the
messages, a bounded piece per call (create_queue and subscribe call it until
it is done).

That layout kept a hash 'state': id -> '<token>:<receive_count>:
<first_received_at>[:<visible_since>]' (with a trailing 'x' once a request's
sender gave up) for every message received and not yet deleted. This layout
keeps the same facts in a header before the stored message (_prelude.lua).
The token is kept, so receipts issued before the upgrade stay valid.

KEYS[1] msgs   } the queue
KEYS[2] state  }
KEYS[3] vis    }
KEYS[4] msgs   } its dead-letter queue
KEYS[5] state  }
KEYS[6] vis    }

ARGV[1] the queue's HSCAN cursor (1 to 19 digits): '0' to start, '-' when done
ARGV[2] the dead-letter queue's

Reply: {cursor, cursor}, '-' for each one finished; call again until both are.
Errors: RQ_BADARG.
]]
local function fold(msgs_key, state_key, vis_key, cursor)
  if cursor == '-' then return '-' end
  local page = redis.call('HSCAN', state_key, cursor, 'COUNT', 200)
  local flat = page[2]
  for i = 1, #flat, 2 do
    local id, st = flat[i], flat[i + 1]
    local m = redis.call('HGET', msgs_key, id)
    local tok, rc, first, since = string.match(st, '^(%d+):(%d+):(%d+):?(%d*)')
    if m and tok and header_end(m) == 0 then
      if string.byte(st, -1) == 120 and string.byte(m, 14) == 63 then -- 'x': sender gave up
        m = string.sub(m, 1, 13) .. string.sub(m, 15)
      end
      local head = 'R' .. tok .. ':' .. rc .. ':' .. first
      if since ~= '' then head = head .. ':' .. since end
      redis.call('HSET', msgs_key, id, head .. '|' .. m)
      -- received: scored half a ms before it is visible (receive.lua)
      local score = tonumber(redis.call('ZSCORE', vis_key, id))
      if score and score == math.floor(score) then
        redis.call('ZADD', vis_key, 'XX', score - 0.5, id)
      end
    end
    redis.call('HDEL', state_key, id)
  end
  return page[1] == '0' and '-' or page[1]
end

for i = 1, 2 do
  local c = ARGV[i]
  if not (c == '-' or (c and #c <= 19 and string.find(c, '^%d+$'))) then
    return bad_arg('cursor', "an HSCAN cursor (1 to 19 digits), or '-' when done")
  end
end
return {fold(KEYS[1], KEYS[2], KEYS[3], ARGV[1]), fold(KEYS[4], KEYS[5], KEYS[6], ARGV[2])}
