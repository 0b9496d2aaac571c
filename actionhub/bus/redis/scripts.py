"""The Lua scripts: every multi-step change actionhub makes in Redis happens in one of these,
atomically. Shared by the hub's transports and every client (nothing here talks to Redis)."""

# Delayed messages: one sorted set per prefix, scored by the Redis clock (not the hubs' clocks).
# SCHEDULE adds a member (see `delayed_member`), and acks the entry it retries if given one;
# MOVE_DUE moves what is due, at most ARGV[1] members, and says how long until the next.
SCHEDULE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
if KEYS[2] then redis.call('XACK', KEYS[2], ARGV[3], ARGV[4]) end
return 1
"""

MOVE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local item = cjson.decode(member)
  if item[1] == 'p' then
    redis.call('PUBLISH', item[2], item[4])
  elseif item[3] ~= '' then
    redis.call('XADD', item[2], '*', 'message', item[4], 'group', item[3])
  else
    redis.call('XADD', item[2], '*', 'message', item[4])
  end
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = tonumber(nxt[2]) - now end
return {#due, tostring(wait)}
"""

# Lease renewal of the entries a hub holds: XCLAIM JUSTID, but only those it still holds (an entry
# another hub has taken since is never stolen back); returns the ids it lost.
RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      table.insert(lost, ARGV[i])
    end
  end
end
return lost
"""

# The hub-wide look for entries abandoned by dead hubs: KEYS are streams, ARGV[1] the idle time
# (ms) past which an entry is abandoned, ARGV[i + 1] the group of KEYS[i]. Returns the (1-based)
# positions of the pairs with such an entry (a missing stream or group has none).
ABANDONED = """
local found = {}
for i, stream in ipairs(KEYS) do
  local p = redis.pcall('XPENDING', stream, ARGV[i + 1], 'IDLE', ARGV[1], '-', '+', 1)
  if type(p) == 'table' and p.err == nil and #p > 0 then table.insert(found, i) end
end
return found
"""

# Where a lazy template's group stands on each of its streams: KEYS are streams, ARGV[i] the
# group of KEYS[i]. For each, {1 if the group has entries not yet delivered or pending, else 0,
# the id of the stream's last entry ('0-0' if none)}.
BACKLOG = """
local function after(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if ma ~= mb then return ma > mb end
  return tonumber(string.sub(a, da + 1)) > tonumber(string.sub(b, db + 1))
end
local out = {}
for i, stream in ipairs(KEYS) do
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local last_id = '0-0'
  if #last > 0 then last_id = last[1][1] end
  local backlog = 0
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and groups.err == nil then
    for _, flat in ipairs(groups) do
      local g = {}
      for j = 1, #flat, 2 do g[flat[j]] = flat[j + 1] end
      if g['name'] == ARGV[i] and (g['pending'] > 0 or after(last_id, g['last-delivered-id'])) then
        backlog = 1
      end
    end
  end
  table.insert(out, {backlog, last_id})
end
return out
"""

# On a graceful close: entries read but never started are made claimable at once (their idle
# time is set past the visibility timeout, and the delivery they never had is not counted), and
# the consumer is removed if it holds nothing.
RELEASE_UNSTARTED = """
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    local count = math.max(tonumber(p[1][4]) - 1, 0)
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i],
               'IDLE', ARGV[3], 'RETRYCOUNT', count, 'JUSTID')
  end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""

# Trimming: below the oldest entry any group of the stream has not delivered or acked, and never
# an entry younger than ARGV[2] ms; consumers that hold nothing and have been idle for ARGV[1] ms
# are removed.
TRIM = """
local function record(flat)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  return fields
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local min_id, min_ms, min_seq = nil, nil, nil
for _, flat_group in ipairs(groups) do
  local g = record(flat_group)
  -- consumers of hubs that died long ago and hold nothing are forgotten (XREADGROUP recreates
  -- a live one that was only quiet)
  for _, flat_consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], g['name'])) do
    local c = record(flat_consumer)
    if c['pending'] == 0 and c['idle'] > tonumber(ARGV[1]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], g['name'], c['name'])
    end
  end
  local keep = g['last-delivered-id']
  if g['pending'] > 0 then keep = redis.call('XPENDING', KEYS[1], g['name'])[2] end
  local dash = string.find(keep, '-', 1, true)
  local ms, seq = tonumber(string.sub(keep, 1, dash - 1)), tonumber(string.sub(keep, dash + 1))
  if min_id == nil or ms < min_ms or (ms == min_ms and seq < min_seq) then
    min_id, min_ms, min_seq = keep, ms, seq
  end
end
-- never an entry younger than ARGV[2] ms: a publish's resend looks for its first attempt's
-- entry among the stream's recent ones (see once.py)
local t = redis.call('TIME')
local young = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
if young < min_ms then min_id = string.format('%d', math.max(young, 0)) .. '-0' end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', min_id)
"""

# Create a consumer group, atomically deciding where it starts: at the stream's start when asked
# (ARGV[2] == "1") or when no group reads the stream yet (its entries wait for their first
# consumer: publishing before any hub started loses nothing), else at its end. Returns
# {created (0/1), entries before the start}.
CREATE_GROUP = """
local start = '0'
local length = redis.call('XLEN', KEYS[1])
if ARGV[2] ~= '1' and length > 0 and #redis.call('XINFO', 'GROUPS', KEYS[1]) > 0 then start = '$' end
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM')
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'BUSYGROUP', 1, true) then return {0, 0} end
  return redis.error_reply(reply.err)
end
if start == '$' then return {1, length} end
return {1, 0}
"""

#: register ``ARGV[1]`` as live for ``ARGV[2]`` ms (Redis clock), drop lapsed members, list the rest
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #lapsed > 0 then redis.call('ZREM', KEYS[1], unpack(lapsed)) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

#: take each lease of ``KEYS`` for ``ARGV[1]`` (or renew it if already held) for ``ARGV[2]`` ms;
#: returns the (1-based) positions of the keys it holds afterwards
CLAIM_LEASES = """
local held = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('MGET', key)[1]
  if holder == false or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[#held + 1] = i
  end
end
return held
"""

#: drop each lease of ``KEYS`` that ``ARGV[1]`` holds; how many it dropped
RELEASE_LEASES = """
local dropped = 0
for _, key in ipairs(KEYS) do
  if redis.call('MGET', key)[1] == ARGV[1] then dropped = dropped + redis.call('DEL', key) end
end
return dropped
"""

#: what Redis holds for one topic, as one JSON document: KEYS are the topic's streams (ARGV[1] of
#: them), its dead-letter stream and the delayed set; ARGV[2] caps the delayed members looked at;
#: ARGV[3] starts the delayed members of its main stream or channel, ARGV[4] (or '') those of its
#: partition streams, which then go on with the partition's number (see `delayed_member`)
TOPIC_INFO = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local streams = {}
for i = 1, n do
  local key = KEYS[i]
  -- an error: no such key (or not a stream); only commands the least-privilege user has
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
local main, partition, limit = ARGV[3], ARGV[4], tonumber(ARGV[2])
local delayed, due, next_due = 0, 0, false
local members = redis.call('ZRANGE', KEYS[n + 2], 0, limit, 'WITHSCORES')  -- one more: complete?
for i = 1, math.min(#members, 2 * limit), 2 do
  local m = members[i]
  if string.sub(m, 1, #main) == main
    or (#partition > 0 and string.sub(m, 1, #partition) == partition
        and string.find(m, '^%d+",', #partition + 1)) then
    delayed = delayed + 1
    local at = tonumber(members[i + 1])
    if at <= now then due = due + 1 elseif not next_due then next_due = at - now end
  end
end
return cjson.encode({
  streams = streams, dead = redis.call('XLEN', KEYS[n + 1]), delayed = delayed, due = due,
  next_due = next_due, complete = #members <= 2 * limit, now = now
})
"""

# Was a message written to stream ``stream`` in the last ``back`` ms (Redis clock)? Its entry's
# ``message`` field starts with ``prefix``, ``{"id":"<id>",`` (`Message.envelope` puts the id
# first). Only a resend runs it (see once.py): the window is the seconds since the first attempt.
_WRITTEN = """
local function written(stream, prefix, back)
  local t = redis.call('TIME')
  local since = math.max(0, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - back)
  local start, n = string.format('%d', since), #prefix
  while true do
    local found = redis.call('XRANGE', stream, start, '+', 'COUNT', 500)
    for _, entry in ipairs(found) do
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'message' and string.sub(fields[i + 1], 1, n) == prefix then return true end
      end
    end
    if #found < 500 then return false end
    start = '(' .. found[#found][1]
  end
end
"""

# One publish that needs more than a bare XADD: deduplicated, delayed, or to a topic that keeps
# results; or the resend of any publish (see once.py). KEYS: the stream (or channel), the dedupe
# key (or the stream)[, the topic's keep-results key, the message's status key[, the delayed set]].
# ARGV: the entry, the id, the kind ('x' stream, 'p' channel), the topic ('': the publisher knows
# it keeps no results), the dedupe window (ms, '0': none)[, the look-back (ms; 0: a first
# attempt), the entry's prefix[, the delay (s), the delayed member]]: a first attempt sends only
# what it needs. A dedupe key still held returns the first id and writes nothing. A resend writes
# nothing if the first attempt did: its status record, its entry within the look-back or its
# delayed member (ZADD NX) is there. Else XADD (or PUBLISH, or the delayed set), then the dedupe
# key (only once the write succeeded), and a pending status record if a group of the topic keeps
# results.
PUBLISH_ONCE = (
    _WRITTEN
    + """
if ARGV[5] ~= '0' then
  local first = redis.call('GET', KEYS[2])
  if first then return first end
end
local stream, back, delay = ARGV[3] ~= 'p', tonumber(ARGV[6] or '0'), tonumber(ARGV[8] or '0')
local keep = nil
if stream and ARGV[4] ~= '' then keep = redis.call('GET', KEYS[3]) end
if back > 0 and stream then
  if (keep and redis.call('GET', KEYS[4])) or written(KEYS[1], ARGV[7], back) then return ARGV[2] end
end
local t = nil
if delay > 0 then
  t = redis.call('TIME')
  redis.call('ZADD', KEYS[5], 'NX', tonumber(t[1]) + tonumber(t[2]) / 1000000 + delay, ARGV[9])
elseif stream then
  redis.call('XADD', KEYS[1], '*', 'message', ARGV[1])
else
  redis.call('PUBLISH', KEYS[1], ARGV[1])
end
if ARGV[5] ~= '0' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5]) end
if keep then
  t = t or redis.call('TIME')
  local record = cjson.encode({state = 'pending', topic = ARGV[4],
                               at = tonumber(t[1]) + tonumber(t[2]) / 1000000})
  redis.call('SET', KEYS[4], record, 'EX', math.floor(tonumber(keep)) + 86400, 'NX')
end
return ARGV[2]
"""
)

# A batch of publishes of one topic in one atomic call: all of it or none. KEYS[1] is the topic's
# keep-results key, then per message its stream (or channel), and its status key if ARGV[3] is
# '1' (the topic keeps results: a pending record each). ARGV: the kind ('x' stream, 'p' channel),
# the topic, '1' or '0', the look-back (ms; 0: a first attempt), the first entry's prefix, then
# the entries. A resend writes nothing if the batch's first entry is in its stream within the
# look-back (the batch was written whole). Returns the messages written.
PUBLISH_MANY_ONCE = (
    _WRITTEN
    + """
local per = 1
if ARGV[3] == '1' then per = 2 end
local n, stream = (#KEYS - 1) / per, ARGV[1] ~= 'p'
if ARGV[4] ~= '0' and stream and written(KEYS[2], ARGV[5], tonumber(ARGV[4])) then return 0 end
local keep, record, ttl = nil, nil, nil
if per == 2 and stream then keep = redis.call('GET', KEYS[1]) end
if keep then
  local t = redis.call('TIME')
  record = cjson.encode({state = 'pending', topic = ARGV[2], at = tonumber(t[1]) + tonumber(t[2]) / 1000000})
  ttl = math.floor(tonumber(keep)) + 86400
end
for i = 0, n - 1 do
  local target = KEYS[2 + per * i]
  if stream then
    redis.call('XADD', target, '*', 'message', ARGV[6 + i])
  else
    redis.call('PUBLISH', target, ARGV[6 + i])
  end
  if keep then redis.call('SET', KEYS[3 + 2 * i], record, 'EX', ttl, 'NX') end
end
return n
"""
)

# A message's status record (results.py), SET for its time to live unless the stored record has
# a higher rank (ARGV[4]; `actionhub.results.rank`, computed here alike: a late write from another
# hub never undoes a later state); a final one also rings the message's bell: one entry, for a
# short while, rotated in place (BLMOVE) by every waiter.
WRITE_STATUS = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, doc = pcall(cjson.decode, old)
  if ok and type(doc) == 'table' then
    local order = ({pending = 0, retrying = 1, running = 2, done = 3, dead = 3})[doc.state] or 0
    if (tonumber(doc.attempt) or 0) * 4 + order > tonumber(ARGV[4]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('DEL', KEYS[2])
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# A schedule's ticks, each published once across every hub (see actionhub/bus/ticks.py, whose
# `decide` this mirrors; keep the two in step). KEYS[1] the schedule's state
# ('<digest>:<last>:<fired>', see `ScheduleState`: a string read with MGET, so the README's
# least-privilege ACL user needs nothing more), KEYS[2] the topic's stream (or channel).
# ARGV[1] the definition's digest, ARGV[2] catch_up, ARGV[3] 'x' (XADD) or 'p' (PUBLISH), then
# per tick, oldest first: its ms, '1' if overdue, its envelope. Ticks after the Redis clock are
# refused. Returns {last, now (ms), fresh (0/1), refused, the ticks published...}.
FIRE_TICKS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local raw = redis.call('MGET', KEYS[1])[1]
local state = {false, false, ''}
if raw then
  local a = string.find(raw, ':', 1, true)
  local b = string.find(raw, ':', a + 1, true)
  state = {string.sub(raw, 1, a - 1), string.sub(raw, a + 1, b - 1), string.sub(raw, b + 1)}
end
local due, early = {}, 0
for i = 1, (#ARGV - 3) / 3 do
  if tonumber(ARGV[3 * i + 1]) <= now then due[#due + 1] = i else early = early + 1 end
end
local fresh = state[1] ~= ARGV[1]
if fresh and raw and #ARGV == 3 then
  return {now, now, 1, 0}  -- a read leaves another definition's state alone
end
local publish, last, fired = {}, now, state[3]
local new, newest_overdue = {}, nil
for _, i in ipairs(due) do
  if not raw or tonumber(ARGV[3 * i + 1]) > tonumber(state[2]) then
    new[#new + 1] = i
    if ARGV[3 * i + 2] == '1' then newest_overdue = i end
  end
end
if raw then last = tonumber(state[2]) end
for _, i in ipairs(new) do
  local overdue = ARGV[3 * i + 2] == '1'
  if fresh then
    -- another definition's stored last is the floor; its missed ticks are not owed
    if not overdue or i == new[#new] then publish[#publish + 1] = i end
  elseif not overdue or ARGV[2] == 'all' or (ARGV[2] == 'latest' and i == newest_overdue) then
    publish[#publish + 1] = i
  end
  last = math.max(last, tonumber(ARGV[3 * i + 1]))
end
if not raw and #new > 0 then last = tonumber(ARGV[3 * new[#new] + 1]) end
local out = {last, now, fresh and 1 or 0, early}
for _, i in ipairs(publish) do
  if ARGV[3] == 'p' then
    redis.call('PUBLISH', KEYS[2], ARGV[3 * i + 3])
  else
    redis.call('XADD', KEYS[2], '*', 'message', ARGV[3 * i + 3])
  end
  out[#out + 1] = tonumber(ARGV[3 * i + 1])
  fired = ARGV[3 * i + 1]
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', last) .. ':' .. fired)
return out
"""

# A group's rate and concurrency limits (see bus/redis/limits.py), one call for every run of a
# hub waiting for them. KEYS: `Keys.limits`, then `Keys.limit_reply` of the hub. ARGV: 1 GCRA
# interval (us, 0: no rate), 2 its tolerance (us), 3 slot limit (0: none), 4 slot lease (ms),
# 5 how long a hub stays counted as waiting for a slot (ms), 6 the hub, 7 slots it holds after
# the releases, 8 tokens wanted, 9 slots wanted, 10 of which for runs waiting now, 11 with both
# limits: 1 (each new slot brings a token), 12 the number of the first new slot, 13 tokens given
# back (taken ahead of need, unused), 14 the hub's call number, 15 the hub's limits (as text),
# 16.. slots given back. While other hubs wait for a slot, a hub gets no more than its share.
# Returns {slots, tokens, us until the next token (-1: no rate), 1 if other hubs wait for a
# slot, the other limits the last hub before this one had ('' if the same)}.
# A call resent after its reply was lost (same hub, same call number) changes nothing and gets
# the first reply again: the slots and tokens it granted are the hub's, its returns count once.
# The reply is kept a lease and a second, so a resend finds it while the slots it names live.
LIMIT = """
local cached = redis.call('GET', KEYS[5])
if cached then
  local reply = cjson.decode(cached)
  if reply[1] == ARGV[14] then return {reply[2], reply[3], reply[4], reply[5], reply[6]} end
end
local other = redis.call('GET', KEYS[4])
if not other or other == ARGV[15] then other = '' end
redis.call('SET', KEYS[4], ARGV[15], 'PX', tonumber(ARGV[4]) * 2)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
for i = 16, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
local limit, hub = tonumber(ARGV[3]), ARGV[6]
local slots, contended = 0, 0
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms - tonumber(ARGV[5]))
  local free = limit - redis.call('ZCARD', KEYS[2])
  local others = redis.call('ZCARD', KEYS[3])
  if redis.call('ZSCORE', KEYS[3], hub) then others = others - 1 end
  if others > 0 then
    contended = 1
    free = math.min(free, math.ceil(limit / (others + 1)) - tonumber(ARGV[7]))
  end
  slots = math.max(0, math.min(tonumber(ARGV[9]), free))
  local lapse = now_ms + tonumber(ARGV[4])
  for i = 0, slots - 1 do redis.call('ZADD', KEYS[2], lapse, hub .. ':' .. (tonumber(ARGV[12]) + i)) end
  if slots < tonumber(ARGV[10]) then
    redis.call('ZADD', KEYS[3], now_ms, hub)
    redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]))
  else
    redis.call('ZREM', KEYS[3], hub)
  end
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) * 2)
end
local interval = tonumber(ARGV[1])
local tokens, wait = 0, -1
if interval > 0 then
  local tolerance = tonumber(ARGV[2])
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[13]) * interval
  tat = math.max(tat, now)
  local wanted = tonumber(ARGV[8])
  if ARGV[11] == '1' then wanted = wanted + slots end
  local ahead = now + tolerance - tat
  if ahead >= 0 then tokens = math.min(wanted, math.floor(ahead / interval) + 1) end
  if tokens > 0 or ARGV[13] ~= '0' then
    tat = tat + tokens * interval
    redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
  wait = math.max(0, math.ceil(tat - tolerance - now))
end
redis.call('SET', KEYS[5], cjson.encode({ARGV[14], slots, tokens, wait, contended, other}),
           'PX', tonumber(ARGV[4]) + 1000)
return {slots, tokens, wait, contended, other}
"""

# Renew a hub's concurrency slots (KEYS[1], `Keys.limits`) for ARGV[1] ms from now, Redis time:
# those in ARGV[2..] that are still there (a slot that lapsed while its hub stalled is not taken
# back). Returns how many had lapsed.
LIMIT_RENEW = """
local t = redis.call('TIME')
local lapse = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local lapsed = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], lapse, ARGV[i])
  else
    lapsed = lapsed + 1
  end
end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2) end
return lapsed
"""
