"""What actionhub keeps in Redis, sans I/O: key names, the Lua scripts, partition routing and the
fields of a dead letter. The one source of truth for the Redis wire, used by the hub's Redis
transports and by the clients (the envelope itself is `actionhub.message`); nothing here talks to
Redis, so every client (blocking, asyncio, trio) shares it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import zlib

import attrs
import orjson

from ..errors import ConfigurationError, MalformedMessage
from ..message import Message, decode
from .base import DeadLetter

#: Partitions of a topic whose first ordered group or keyed publisher did not say, and the most.
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 1024


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: CRC-32 (as in zlib, Java's CRC32, Go's hash/crc32) of its UTF-8
    bytes, modulo ``partitions``."""
    return zlib.crc32(key.encode()) % partitions


@attrs.frozen
class Keys:
    """Every key name under one prefix (``actionhub:`` unless the URL says ``?prefix=``)."""

    prefix: str = "actionhub:"

    def stream(self, topic: str) -> str:
        """A topic's stream: unkeyed messages (and pub/sub: its channel)."""
        return f"{self.prefix}{topic}"

    def partition(self, topic: str, partition: int) -> str:
        """One partition stream of a keyed topic."""
        return f"{self.prefix}{topic}:p{partition}"

    def partitions(self, topic: str) -> str:
        """A topic's partition count, set once (SET NX) by its first ordered group or keyed publisher."""
        return f"{self.prefix}partitions:{topic}"

    def keyed_stream(self, topic: str, key: str, partitions: int) -> str:
        """Where a message with ordering ``key`` goes."""
        return self.partition(topic, partition_of(key, partitions))

    def dead(self, topic: str) -> str:
        return f"{self.prefix}dead:{topic}"

    @property
    def delayed(self) -> str:
        """The delayed set of every topic of the prefix (scored by the Redis clock)."""
        return f"{self.prefix}delayed"

    def progress(self, topic: str, group: str, message_id: str) -> str:
        """A message's checkpoint in one consumer group."""
        return f"{self.prefix}progress:{topic}:{group}:{message_id}"

    @property
    def reply_prefix(self) -> str:
        return f"{self.prefix}reply:"

    def new_reply(self) -> str:
        """A fresh reply list: a requester BLPOPs it, the action LPUSHes there."""
        return f"{self.reply_prefix}{secrets.token_hex(12)}"

    def hub(self, name: str) -> str:
        """A live hub's announced snapshot (it expires)."""
        return f"{self.prefix}hub:{name}"

    @property
    def hubs(self) -> str:
        """The SCAN pattern of every announced hub."""
        return f"{self.prefix}hub:*"

    @property
    def control(self) -> str:
        """The pub/sub channel of operator commands."""
        return f"{self.prefix}control"

    def events(self, stream: str) -> str:
        """A stream of events, such as ``escalations``."""
        return f"{self.prefix}{stream}"

    def members(self, topic: str, group: str) -> str:
        """The live hubs of an ordered group (a sorted set scored by their lapse time)."""
        return f"{self.prefix}members:{topic}:{group}"

    def lease(self, topic: str, group: str, partition: int) -> str:
        """Who reads one partition of an ordered group."""
        return f"{self.prefix}lease:{topic}:{group}:{partition}"


#: Entries per round trip (one MULTI/EXEC) of a publish of many messages.
PUBLISH_BATCH = 1000


def encode_entry(message: Message, max_bytes: int) -> bytes:
    """The wire-format envelope of ``message`` (`TypeError` if its payload is not JSON,
    `ValueError` past ``max_bytes``): what goes in the ``message`` field of a stream entry."""
    try:
        raw = message.encode()
    except TypeError as exc:
        raise TypeError(f"payload is not JSON-serialisable: {exc}") from None
    if len(raw) > max_bytes:
        raise ValueError(f"message is {len(raw)} bytes, over the limit of {max_bytes}")
    return raw


def partition_count(key: str, raw: bytes | str | None) -> int | None:
    """The partition count stored at ``key`` (`Keys.partitions`), None if there is none yet."""
    if raw is None:
        return None
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_PARTITIONS:
        raise ConfigurationError(f"{key} holds {raw!r}, not a partition count from 1 to {MAX_PARTITIONS}")
    return count


def delayed_member(kind: str, target: str, group: str, entry: bytes) -> bytes:
    """A member of the delayed set: ``[kind, target, group, entry]``; kind ``x`` adds ``entry`` to
    stream ``target`` (for consumer ``group`` only, if not ""), kind ``p`` publishes it on channel
    ``target`` (see `MOVE_DUE`)."""
    return orjson.dumps([kind, target, group, entry.decode()])


def dead_letter_fields(
    raw: bytes,
    *,
    topic: str,
    group: str,
    reason: str,
    attempts: int,
    error: str | None,
    traceback: str | None,
) -> dict[str, bytes | str]:
    """The fields of an entry of ``<prefix>dead:<topic>``."""
    return {
        "message": raw,
        "topic": topic,
        "group": group,
        "reason": reason,
        "error": error or "",
        "traceback": traceback or "",
        "attempts": str(attempts),
        "failed_at": repr(time.time()),
    }


def dead_letter_of(topic: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    """A `DeadLetter` from an entry of ``<prefix>dead:<topic>``; a malformed message is kept as
    received, its payload the raw text."""
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    raw = fields.get(b"message", b"")
    try:
        message = decode(topic, raw, max_bytes=len(raw) + 1)
    except MalformedMessage:
        message = Message(topic, raw.decode(errors="replace"), id=entry)
    error = fields.get(b"error", b"").decode(errors="replace")
    traceback = fields.get(b"traceback", b"").decode(errors="replace")
    return DeadLetter(
        message,
        reason=fields.get(b"reason", b"").decode(errors="replace"),
        error=error or None,
        traceback=traceback or None,
        attempts=int(fields.get(b"attempts", b"1")),
        group=fields.get(b"group", b"").decode(errors="replace") or None,
        at=float(fields.get(b"failed_at", b"0")),
        id=entry,
    )


@attrs.frozen
class Requeued:
    """A dead letter going back: its entry fields (a first attempt again, for the group that
    dead-lettered it) and its ordering key (its partition, if the topic has some)."""

    fields: dict[str, bytes | str]
    key: str | None


def requeued(topic: str, fields: dict[bytes, bytes]) -> Requeued:
    raw = fields.get(b"message", b"")
    key = None
    with contextlib.suppress(MalformedMessage):  # if malformed, requeued as it came
        message = decode(topic, raw, max_bytes=len(raw) + 1)
        raw, key = attrs.evolve(message, attempt=1).encode(), message.key
    entry: dict[str, bytes | str] = {"message": raw}
    group = fields.get(b"group", b"").decode()
    if group:
        entry["group"] = group
    return Requeued(entry, key)


def control_document(command: bytes, reply_to: str) -> bytes:
    """An operator command as published on `Keys.control`: the command and where to answer."""
    return orjson.dumps({**orjson.loads(command), "reply_to": reply_to})


# ---------------------------------------------------------------------- scripts

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

# Trimming: below the oldest entry any group of the stream has not delivered or acked; consumers
# that hold nothing and have been idle for ARGV[1] ms are removed.
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


__all__ = [
    "CLAIM_LEASES",
    "CREATE_GROUP",
    "DEFAULT_PARTITIONS",
    "HEARTBEAT",
    "MAX_PARTITIONS",
    "MOVE_DUE",
    "PUBLISH_BATCH",
    "RELEASE_LEASES",
    "RELEASE_UNSTARTED",
    "RENEW",
    "SCHEDULE",
    "TRIM",
    "Keys",
    "Requeued",
    "control_document",
    "dead_letter_fields",
    "dead_letter_of",
    "delayed_member",
    "encode_entry",
    "partition_count",
    "partition_of",
    "requeued",
]
