"""Redis Cluster routing, sans I/O: the slot of a key, the keys of each command actionhub sends,
and which node owns which slot.

Groundwork with no user yet: used by the cluster transport (issue 20 part 3, docs/design/cluster.md
§6.2). Key slots are redis-py's (`redis.crc.key_slot`, hash tags included). redis-py's own
command-key lookup asks a live node (``COMMAND``) and blocks, so the few commands the wire path
sends have their key positions listed here; any other command is refused rather than misrouted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS
from redis.crc import key_slot as _crc_slot

from ...errors import BusError

#: Slots of a Redis Cluster.
SLOTS = REDIS_CLUSTER_HASH_SLOTS

Arg = bytes | str | int | float
Command = Sequence[Arg]
#: A node's (host, port).
Address = tuple[str, int]


def key_slot(key: bytes | str) -> int:
    """The slot of ``key``, as ``CLUSTER KEYSLOT`` computes it: CRC16 of the hash tag (what lies
    between the first ``{`` and the first ``}`` after it, if not empty), else of the whole key."""
    return _crc_slot(key.encode() if isinstance(key, str) else key)


def _name(arg: Arg) -> str:
    return (arg.decode() if isinstance(arg, bytes) else str(arg)).upper()


def _encoded(arg: Arg) -> bytes:
    return arg if isinstance(arg, bytes) else str(arg).encode()


def _words(names: str) -> frozenset[str]:
    return frozenset(names.split())


#: Commands whose one key is their first argument.
_FIRST_KEY = _words(
    "XADD XACK XDEL XLEN XRANGE XREVRANGE XCLAIM XAUTOCLAIM XPENDING XTRIM XSETID SET GET GETDEL "
    "INCR EXPIRE PEXPIRE TTL PTTL TYPE LPUSH RPUSH LRANGE LLEN ZADD ZREM ZRANGE ZRANGEBYSCORE "
    "ZSCORE ZCARD SPUBLISH"
)
#: Commands whose every argument is a key.
_ALL_KEYS = _words("MGET DEL UNLINK EXISTS TOUCH")
#: Commands whose key is their second argument (after a subcommand).
_SUBCOMMAND_KEY = _words("XGROUP XINFO")
#: Commands with a ``numkeys`` argument after the script: ``EVALSHA sha 2 k1 k2 args...``.
_SCRIPT = _words("EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO")
#: Commands that touch no key: sent to any node, or to the node a connection is for. Classic
#: ``PUBLISH`` reaches every node's subscribers from any node.
_KEYLESS = _words(
    "PING ECHO WAIT MULTI EXEC DISCARD SCRIPT CLUSTER INFO TIME AUTH SELECT CLIENT HELLO ASKING "
    "READONLY READWRITE PUBLISH SUBSCRIBE UNSUBSCRIBE PSUBSCRIBE PUNSUBSCRIBE SCAN COMMAND"
)
#: Options of XREAD/XREADGROUP before STREAMS, and how many values each takes.
_READ_OPTIONS = {"COUNT": 1, "BLOCK": 1, "NOACK": 0, "GROUP": 2}


def command_keys(command: Command) -> list[bytes]:
    """The keys ``command`` touches (what its slot is computed from); a `BusError` for a command
    this module does not know."""
    name = _name(command[0])
    args = command[1:]
    if name in _FIRST_KEY:
        keys: Sequence[Arg] = args[:1]
    elif name in _ALL_KEYS:
        keys = args
    elif name in _SUBCOMMAND_KEY:
        keys = args[1:2] if _name(args[0]) != "HELP" else ()
    elif name in _SCRIPT:
        keys = args[2 : 2 + int(args[1])]
    elif name in ("XREAD", "XREADGROUP"):
        keys = _streams_of(args)
    elif name == "BLPOP":
        keys = args[:-1]  # the last argument is the timeout
    elif name in ("BLMOVE", "LMOVE"):
        keys = args[:2]
    elif name in _KEYLESS:
        keys = ()
    else:
        raise BusError(f"no cluster routing rule for {name}: add one to bus/redis/slots.py")
    return [_encoded(key) for key in keys]


def _streams_of(args: Sequence[Arg]) -> Sequence[Arg]:
    at = 0
    while _name(args[at]) != "STREAMS":
        at += 1 + _READ_OPTIONS[_name(args[at])]
    rest = args[at + 1 :]
    return rest[: len(rest) // 2]


def slot_of(*commands: Command) -> int | None:
    """The one slot every key of ``commands`` hashes to (a ``MULTI`` block is given whole), None
    if they touch no key. Keys of two slots are a bug (Redis would answer CROSSSLOT): `BusError`."""
    slots = {key_slot(key) for command in commands for key in command_keys(command)}
    if len(slots) > 1:
        shown = " / ".join(" ".join(map(str, command))[:120] for command in commands)
        raise BusError(f"cross-slot command (slots {sorted(slots)}): {shown}")
    return slots.pop() if slots else None


class SlotMap:
    """Which primary owns each slot, from a ``CLUSTER SHARDS`` (Redis 7+) or ``CLUSTER SLOTS``
    reply; updated slot by slot by ``MOVED`` redirections until the next full reply."""

    __slots__ = ("_owners", "replicas")

    def __init__(
        self, ranges: Iterable[tuple[int, int, Address]], replicas: Mapping[Address, Sequence[Address]]
    ):
        """``ranges``: (first slot, last slot, primary); ``replicas``: each primary's replicas."""
        self._owners: list[Address | None] = [None] * SLOTS
        for first, last, primary in ranges:
            self._owners[first : last + 1] = [primary] * (last - first + 1)
        self.replicas: dict[Address, tuple[Address, ...]] = {p: tuple(r) for p, r in replicas.items()}

    @classmethod
    def from_shards(cls, reply: Sequence[Any], host: str) -> SlotMap:
        """From ``CLUSTER SHARDS`` (RESP2 flat lists or RESP3 maps). ``host``: the host the reply
        came from, for nodes that announce no endpoint."""
        ranges: list[tuple[int, int, Address]] = []
        replicas: dict[Address, Sequence[Address]] = {}
        for shard in map(_as_dict, reply):
            nodes = [_as_dict(node) for node in shard["nodes"]]
            primaries = [node for node in nodes if _text(node["role"]) == "master"]
            if not primaries or not shard["slots"]:
                continue  # a failed primary replaced by its replica: listed alone, without slots
            primary = next((n for n in primaries if _text(n.get("health", "")) == "online"), primaries[0])
            address = _address(primary, host)
            replicas[address] = [_address(n, host) for n in nodes if _text(n["role"]) != "master"]
            slots = list(shard["slots"])
            ranges += [(int(slots[i]), int(slots[i + 1]), address) for i in range(0, len(slots), 2)]
        return cls(ranges, replicas)

    @classmethod
    def from_slots(cls, reply: Sequence[Any], host: str) -> SlotMap:
        """From ``CLUSTER SLOTS`` (what Redis before 7 has): ``[first, last, [ip, port, id],
        replica, ...]`` per range."""
        ranges: list[tuple[int, int, Address]] = []
        replicas: dict[Address, Sequence[Address]] = {}
        for first, last, primary, *others in reply:
            address = (_text(primary[0]) or host, int(primary[1]))
            ranges.append((int(first), int(last), address))
            replicas[address] = [(_text(r[0]) or host, int(r[1])) for r in others]
        return cls(ranges, replicas)

    def node_of(self, slot: int) -> Address | None:
        """The primary owning ``slot``; None if no node serves it (the cluster is not covered)."""
        return self._owners[slot]

    def moved(self, slot: int, address: Address) -> None:
        """``MOVED slot host:port``: ``slot`` now lives at ``address``."""
        self._owners[slot] = address

    @property
    def primaries(self) -> list[Address]:
        """Every primary owning a slot, in slot order."""
        return list(dict.fromkeys(owner for owner in self._owners if owner is not None))

    @property
    def covered(self) -> bool:
        """Whether every slot has a primary."""
        return None not in self._owners


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_dict(value: Any) -> dict[str, Any]:
    """A RESP2 flat ``[name, value, ...]`` list (or a RESP3 map) as a dict with text names."""
    pairs = value.items() if isinstance(value, Mapping) else zip(value[::2], value[1::2], strict=True)
    return {_text(name): item for name, item in pairs}


def _address(node: Mapping[str, Any], host: str) -> Address:
    """Where clients reach ``node``: its endpoint (``?`` or empty when it announces none: then the
    host asked), and its TCP port (``tls-port`` when it listens with TLS only)."""
    endpoint = _text(node.get("endpoint") or node.get("ip") or "")
    port = node.get("port") or node["tls-port"]
    return (endpoint if endpoint not in ("", "?") else host, int(port))
