"""The Lua scripts of the cluster layout (docs/design/cluster.md §2.2, §3.3, §4): each touches
the keys of one slot only, and declares every key it touches. Each starts with ``#!lua``, so
Redis refuses a script that touches an undeclared key of another slot (without the shebang it
would succeed on one node and fail on another). Scripts whose keys already share a slot in the
cluster layout (SCHEDULE, WRITE_STATUS, FIRE_TICKS, RENEW, ...) stay in scripts.py, used by both
layouts. Shared by the hub's transports and every client (nothing here talks to Redis)."""

from __future__ import annotations

from .scripts import _WRITTEN

SHEBANG = "#!lua\n"
#: The shebangs of the scripts that run when Redis is out of memory (``maxmemory``): a script
#: with a shebang is refused whole then, unless it only reads (``no-writes``) or says it may run
#: (``allow-oom``: it only moves memory, as scripts_slots.py's rule). The others are refused,
#: as their single-layout counterparts are at their first write.
READS = "#!lua flags=no-writes\n"
MOVES = "#!lua flags=allow-oom\n"

# One publish that needs more than a bare XADD, in the cluster layout: deduplicated, delayed, or
# the resend of any publish (see once.py). Unlike `PUBLISH_ONCE` it writes no status record (the
# message's status lives in its own slot, `{#id}`): a publisher to a topic that keeps results
# runs `PENDING` once this one succeeded. KEYS: the stream (or channel), the dedupe key (or the
# stream), the delayed set of the stream's slot (or the stream). ARGV: the entry, the id, the kind
# ('x' stream, 'p' channel), the dedupe window (ms, '0': none), the look-back (ms; 0: a first
# attempt), the entry's prefix (or ''), the delay (s, '0': none), the delayed member (or '').
# A dedupe key still held returns the first id and writes nothing. A resend writes nothing if the
# first attempt did: its entry within the look-back or its delayed member (ZADD NX) is there.
# Else XADD (or PUBLISH, or the delayed set), then the dedupe key. Returns the id.
PUBLISH_ONCE_C = (
    SHEBANG
    + _WRITTEN
    + """
if ARGV[4] ~= '0' then
  local first = redis.call('GET', KEYS[2])
  if first then return first end
end
local stream, back, delay = ARGV[3] ~= 'p', tonumber(ARGV[5]), tonumber(ARGV[7])
if back > 0 and stream and written(KEYS[1], ARGV[6], back) then return ARGV[2] end
if delay > 0 then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], 'NX', tonumber(t[1]) + tonumber(t[2]) / 1000000 + delay, ARGV[8])
elseif stream then
  redis.call('XADD', KEYS[1], '*', 'message', ARGV[1])
else
  redis.call('PUBLISH', KEYS[1], ARGV[1])
end
if ARGV[4] ~= '0' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4]) end
return ARGV[2]
"""
)

# A batch of publishes of one topic to streams (or channels) of one slot, in one atomic call: all
# of it or none. KEYS: per message its stream (or channel). ARGV: the kind ('x' stream, 'p'
# channel), the look-back (ms; 0: a first attempt), the first entry's prefix, then the entries. A
# resend writes nothing if the batch's first entry is in its stream within the look-back (the
# batch was written whole). No status records: see `PENDING`. Returns the messages written.
PUBLISH_MANY_ONCE_C = (
    SHEBANG
    + _WRITTEN
    + """
local stream = ARGV[1] ~= 'p'
if ARGV[2] ~= '0' and stream and written(KEYS[1], ARGV[3], tonumber(ARGV[2])) then return 0 end
for i, target in ipairs(KEYS) do
  if stream then
    redis.call('XADD', target, '*', 'message', ARGV[3 + i])
  else
    redis.call('PUBLISH', target, ARGV[3 + i])
  end
end
return #KEYS
"""
)

# The pending status record of a message just published to a topic that keeps results (cluster
# layout: after the publish, §4), unless one is there already (NX: a fast consumer's running or
# done record is never overwritten). KEYS[1] the message's status key. ARGV: the topic, the
# seconds its group keeps results (the value of `Keys.keeps_results`). Returns 1 if written.
PENDING = (
    SHEBANG
    + """
local t = redis.call('TIME')
local record = cjson.encode({state = 'pending', topic = ARGV[1],
                             at = tonumber(t[1]) + tonumber(t[2]) / 1000000})
if redis.call('SET', KEYS[1], record, 'EX', math.floor(tonumber(ARGV[2])) + 86400, 'NX') then
  return 1
end
return 0
"""
)

# The due members of one delayed set (KEYS[1]): at most ARGV[1] of them, oldest first, after the
# seconds until the next one not yet due (-1: none), as text. The caller moves them with
# `MOVE_DUE_C`, which declares their targets.
DUE = (
    READS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local at = string.format('%.17g', now)  -- exact: a number as text has 14 digits (~10 us off)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', at, 'LIMIT', 0, tonumber(ARGV[1]))
local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. at, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local wait = -1
if nxt[2] then wait = tonumber(nxt[2]) - now end
local out = {tostring(wait)}
for _, member in ipairs(due) do out[#out + 1] = member end
return out
"""
)

# Move members of a delayed set (KEYS[1]) to their targets (see `delayed_member`), which the
# caller declares as KEYS[2..] (every one in the set's slot): ARGV the members. Each is removed
# first and written only if this call removed it, so two hubs moving the same member never write
# it twice, and a crash between the calls loses nothing (the member stays in the set). Returns
# the members moved.
MOVE_DUE_C = (
    MOVES
    + """
local moved = 0
for _, member in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local item = cjson.decode(member)
    if item[1] == 'p' then
      redis.call('PUBLISH', item[2], item[4])
    elseif item[3] ~= '' then
      redis.call('XADD', item[2], '*', 'message', item[4], 'group', item[3])
    else
      redis.call('XADD', item[2], '*', 'message', item[4])
    end
    moved = moved + 1
  end
end
return moved
"""
)

# What one slot holds of a topic, as one JSON document (`TOPIC_INFO` per slot; the caller merges
# the slots' documents): KEYS are the topic's streams in this slot (ARGV[1] of them), then its
# dead-letter stream if ARGV[2] is '1' (it is in this slot), then the slot's delayed set. ARGV[3]
# caps the delayed members looked at; ARGV[4..] are the starts of the delayed members bound for
# the topic's streams (or channel) in this slot (see `delayed_member`).
TOPIC_INFO_SLOT = (
    READS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local streams = {}
for i = 1, n do
  local key = KEYS[i]
  local replies = redis.pcall('XINFO', 'GROUPS', key)
  if type(replies) == 'table' and not replies.err then
    local groups = {}
    for _, reply in ipairs(replies) do
      local g = {}
      for j = 1, #reply, 2 do g[reply[j]] = reply[j + 1] end
      local oldest = false
      if g['pending'] > 0 then oldest = redis.call('XPENDING', key, g['name'])[2] end
      groups[#groups + 1] = {g['name'], g['consumers'], g['pending'], g['lag'] or false, oldest}
    end
    streams[#streams + 1] = {redis.call('XLEN', key), groups}
  end
end
local dead, delayed_key = 0, KEYS[n + 1]
if ARGV[2] == '1' then
  dead = redis.call('XLEN', KEYS[n + 1])
  delayed_key = KEYS[n + 2]
end
local limit = tonumber(ARGV[3])
local delayed, due, next_due = 0, 0, false
local members = redis.call('ZRANGE', delayed_key, 0, limit, 'WITHSCORES')  -- one more: complete?
for i = 1, math.min(#members, 2 * limit), 2 do
  local m = members[i]
  for s = 4, #ARGV do
    if string.sub(m, 1, #ARGV[s]) == ARGV[s] then
      delayed = delayed + 1
      local at = tonumber(members[i + 1])
      if at <= now then due = due + 1 elseif not next_due then next_due = at - now end
      break
    end
  end
end
return cjson.encode({
  streams = streams, dead = dead, delayed = delayed, due = due,
  next_due = next_due, complete = #members <= 2 * limit, now = now
})
"""
)

__all__ = [
    "DUE",
    "MOVES",
    "MOVE_DUE_C",
    "PENDING",
    "PUBLISH_MANY_ONCE_C",
    "PUBLISH_ONCE_C",
    "READS",
    "SHEBANG",
    "TOPIC_INFO_SLOT",
]
