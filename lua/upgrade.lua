--[[ upgrade: rewrite a queue made by rqueue 0.1 to this layout, a bounded piece
per call (create_queue and subscribe call it until it is done).

0.1 kept a hash 'state': id -> '<token>:<receive_count>:<first_received_at>
[:<visible_since>]' (with a trailing 'x' once a request's sender gave up) for
every message received and not yet deleted, and no header on a delayed one.
This layout keeps the same facts in headers before the stored messages
(_prelude.lua) and scores a received message half a ms early (receive.lua).
Tokens are kept, so receipts issued before the upgrade stay valid.

KEYS[1] meta   } the queue
KEYS[2] msgs   }
KEYS[3] state  }
KEYS[4] vis    }
KEYS[5] meta   } its dead-letter queue
KEYS[6] msgs   }
KEYS[7] state  }
KEYS[8] vis    }

ARGV[1] cursor of the queue's state (HSCAN; 1 to 19 digits): '0' to start, '-' done
ARGV[2] cursor of the queue's vis (ZSCAN), for delayed messages never received
ARGV[3] cursor of the dead-letter queue's state

When all three are done both metas get 'v' = 2: the queue is of this layout.
Reply: {cursor, cursor, cursor}, '-' for each one finished; call again until all are.
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
      local score = tonumber(redis.call('ZSCORE', vis_key, id))
      if score and score == math.floor(score) then
        redis.call('ZADD', vis_key, 'XX', score - 0.5, id)
      end
    end
    redis.call('HDEL', state_key, id)
  end
  return page[1] == '0' and '-' or page[1]
end

-- A message never received whose score is past its send was delayed: its
-- retention starts at its score, which a 'D' header keeps (receive.lua).
local function mark_delayed(msgs_key, state_key, vis_key, cursor)
  if cursor == '-' then return '-' end
  local page = redis.call('ZSCAN', vis_key, cursor, 'COUNT', 200)
  local flat = page[2]
  for i = 1, #flat, 2 do
    local id, score = flat[i], tonumber(flat[i + 1])
    if score == math.floor(score) then
      -- (one 0.1 received is fold's, whichever scan reaches it first)
      local m = redis.call('HEXISTS', state_key, id) == 0 and redis.call('HGET', msgs_key, id)
      local sent = m and header_end(m) == 0 and tonumber(string.sub(m, 1, 13))
      if sent and score > sent then
        redis.call('HSET', msgs_key, id, string.format('D%d|', score) .. m)
      end
    end
  end
  return page[1] == '0' and '-' or page[1]
end

for i = 1, 3 do
  local c = ARGV[i]
  if not (c == '-' or (c and #c <= 19 and string.find(c, '^%d+$'))) then
    return bad_arg('cursor', "an HSCAN/ZSCAN cursor (1 to 19 digits), or '-' when done")
  end
end
local a = fold(KEYS[2], KEYS[3], KEYS[4], ARGV[1])
local b = mark_delayed(KEYS[2], KEYS[3], KEYS[4], ARGV[2])
local c = fold(KEYS[6], KEYS[7], KEYS[8], ARGV[3])
if a == '-' and b == '-' and c == '-' then
  for _, meta in ipairs({KEYS[1], KEYS[5]}) do
    if redis.call('EXISTS', meta) == 1 then redis.call('HSET', meta, 'v', 2) end
  end
end
return {a, b, c}
