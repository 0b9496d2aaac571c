"""Supervision policy: behaviours, instances, backoff, the restart limit and group configuration."""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Mapping
from typing import TypeVar

import attrs

from ..bus.redis.keys import DEFAULT_PARTITIONS, MAX_PARTITIONS
from ..errors import ConfigurationError
from .limits import parse_rate


class Behaviour(enum.Enum):
    """What a group does with its workers when an action panics."""

    DO_NOTHING = "do_nothing"
    RESTART_ONE = "restart_one"
    RESTART_ALL = "restart_all"
    STOP_ALL_AND_ESCALATE = "stop_all_and_escalate"


E = TypeVar("E", bound=enum.Enum)


class Isolation(enum.Enum):
    """Where a group's action runs: in the hub's trio thread, or in OS processes of its own."""

    TASK = "task"
    PROCESS = "process"


class Start(enum.Enum):
    """Where a new consumer group starts reading a topic's retained history."""

    LATEST = "latest"  # only messages published from now on (but see CREATE_GROUP in bus.redis.scripts)
    EARLIEST = "earliest"  # everything the topic retains, then live


class Instance(enum.Enum):
    """How a group's workers live: one for good, a scaling pool, or one message each."""

    SINGLE = "single"
    SCALING = "scaling"
    ONE_TIME = "one_time"


class OnMaxRestarts(enum.Enum):
    """What a group does once it goes past its restart limit (after escalating)."""

    COOL_DOWN = "cool_down"  # hand back what it holds, stay bound, start again after a cool-down
    REMOVE = "remove"  # leave the hub; what it held goes back to the bus
    STOP_HUB = "stop_hub"  # stop the whole hub, so that its process supervisor restarts it


class GroupState(enum.Enum):
    """Where a group stands, as `WorkerStat.state` tells."""

    RUNNING = "running"
    PAUSED = "paused"  # by an operator: nothing new starts
    COOLING_DOWN = "cooling_down"  # past its restart limit: no workers, reads nothing, comes back
    STOPPED = "stopped"


class EscalationProtocol(enum.Enum):
    """What happened to a worker or a group as the result of an escalation."""

    RESUME = "resume"
    RESTART = "restart"
    KILL_AND_ESCALATE = "kill_and_escalate"


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigurationError(f"{attribute.name} must be a finite number >= 0, not {value!r}")


@attrs.frozen
class Backoff:
    """Exponential backoff: ``min * 2**(n-1)`` capped at ``max``, then spread by ``jitter``
    (a fraction: 0.2 means up to 20 % shorter, so synchronised retries drift apart)."""

    min: float = attrs.field(default=0.1, validator=_non_negative)
    max: float = attrs.field(default=30.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.2, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.max < self.min:
            raise ConfigurationError(f"backoff max ({self.max}) is below min ({self.min})")
        if self.jitter > 1:
            raise ConfigurationError(f"backoff jitter is a fraction in [0, 1], not {self.jitter}")

    def delay(self, n: int, rng: random.Random | None = None) -> float:
        """The delay before the ``n``-th try (1-based)."""
        base = min(self.max, self.min * 2.0 ** min(max(n - 1, 0), 64))
        if self.jitter:
            base *= 1.0 - self.jitter * (rng or random).random()
        return base


class RestartIntensity:
    """Sliding-window restart limit (OTP's intensity/period): more than ``max_restarts``
    restarts within ``window`` seconds means the group gives up and escalates."""

    def __init__(self, max_restarts: int, window: float) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self._restarts: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a restart at ``now`` if the limit allows it; False means escalate."""
        while self._restarts and self._restarts[0] <= now - self.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return False
        self._restarts.append(now)
        return True

    @property
    def recent(self) -> int:
        """Restarts currently inside the window."""
        return len(self._restarts)


def _to_backoff(value: Backoff | tuple[float, ...] | Mapping[str, float] | None) -> Backoff | None:
    """A `Backoff` from itself, a (min, max[, jitter]) tuple or a {min, max, jitter} mapping."""
    if value is None or isinstance(value, Backoff):
        return value
    try:
        if isinstance(value, Mapping):
            return Backoff(**value)
        return Backoff(*value)
    except TypeError:
        raise ConfigurationError(
            f"a backoff is a Backoff, a (min, max[, jitter]) tuple or a mapping of those: {value!r}"
        ) from None


def _to_required_backoff(value: Backoff | tuple[float, ...] | Mapping[str, float]) -> Backoff:
    backoff = _to_backoff(value)
    assert backoff is not None
    return backoff


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be an integer >= 0, not {value!r}")


def _optional_timeout(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{attribute.name} must be a finite number > 0 or None, not {value!r}")


def _to_enum(kind: type[E], name: str, value: E | str) -> E:
    """Option ``name`` as a member of ``kind``, given a member or its value."""
    try:
        return kind(value)
    except ValueError:
        choices = " or ".join(repr(member.value) for member in kind)
        raise ConfigurationError(f"{name} must be {choices}, not {value!r}") from None


def _to_isolation(value: Isolation | str) -> Isolation:
    return _to_enum(Isolation, "isolation", value)


def _to_start(value: Start | str) -> Start:
    return _to_enum(Start, "start", value)


def _to_on_max_restarts(value: OnMaxRestarts | str) -> OnMaxRestarts:
    return _to_enum(OnMaxRestarts, "on_max_restarts", value)


#: The default retry schedule: 10 attempts, 1 s doubling up to 180 s between two of them, so a
#: message is dead-lettered only after failing for 1+2+4+...+128+180 = 435 s (348 s at least,
#: with every delay cut short by the full jitter): long enough to ride out a dependency outage.
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_RETRY_BACKOFF = Backoff(1.0, 180.0, 0.2)
#: The default cool-down of a group past its restart limit: 5 s doubling up to 5 minutes.
DEFAULT_COOL_DOWN = Backoff(5.0, 300.0, 0.2)


def _optional_size(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{attribute.name} must be an integer >= 1 or None, not {value!r}")


def _optional_rate(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        parse_rate(value)  # a ConfigurationError with the reason


@attrs.frozen
class GroupConfig:
    """Everything that shapes one WorkerGroup. Validated here, at the boundary."""

    min_workers: int = attrs.field(default=1, validator=_positive_int)
    max_workers: int = attrs.field(default=10, validator=_positive_int)
    buffer: int = attrs.field(default=100, validator=_positive_int)
    max_idleness: float = attrs.field(default=60.0, validator=_non_negative)
    accept_wait: float = attrs.field(default=0.5, validator=_non_negative)
    behaviour: Behaviour = attrs.field(
        default=Behaviour.RESTART_ONE, validator=attrs.validators.instance_of(Behaviour)
    )
    instance: Instance = attrs.field(
        default=Instance.SCALING, validator=attrs.validators.instance_of(Instance)
    )
    max_restarts: int = attrs.field(default=5, validator=_positive_int)
    restart_window: float = attrs.field(default=30.0, validator=_non_negative)
    restart_backoff: Backoff | None = attrs.field(default=None, converter=_to_backoff)
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, validator=_positive_int)
    retry_backoff: Backoff = attrs.field(default=DEFAULT_RETRY_BACKOFF, converter=_to_required_backoff)
    on_max_restarts: OnMaxRestarts = attrs.field(
        default=OnMaxRestarts.COOL_DOWN, converter=_to_on_max_restarts
    )
    cool_down: Backoff = attrs.field(default=DEFAULT_COOL_DOWN, converter=_to_required_backoff)
    shutdown_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    timeout: float | None = attrs.field(default=None, validator=_optional_timeout)
    isolation: Isolation = attrs.field(default=Isolation.TASK, converter=_to_isolation)
    start: Start = attrs.field(default=Start.LATEST, converter=_to_start)
    max_jobs_per_process: int | None = attrs.field(default=None, validator=_optional_size)
    max_memory_per_process: int | None = attrs.field(default=None, validator=_optional_size)
    memory_limit: int | None = attrs.field(default=None, validator=_optional_size)
    ordered: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    partitions: int | None = attrs.field(default=None, validator=_optional_size)
    rate_limit: str | None = attrs.field(default=None, validator=_optional_rate)
    rate_burst: int | None = attrs.field(default=None, validator=_optional_size)
    concurrency_limit: int | None = attrs.field(default=None, validator=_optional_size)
    keep_result: float | None = attrs.field(default=None, validator=_optional_timeout)  # seconds

    def __attrs_post_init__(self) -> None:
        if self.max_workers < 1:
            raise ConfigurationError("max_workers must be at least 1")
        if self.min_workers > self.max_workers:
            raise ConfigurationError(
                f"min_workers ({self.min_workers}) is above max_workers ({self.max_workers})"
            )
        if self.buffer < 1:
            raise ConfigurationError("buffer must be at least 1")
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        process_only = ("max_jobs_per_process", "max_memory_per_process", "memory_limit")
        if self.isolation is not Isolation.PROCESS:
            given = [name for name in process_only if getattr(self, name) is not None]
            if given:
                raise ConfigurationError(f"{', '.join(given)} only apply with isolation='process'")
        if self.partitions is not None:
            if not self.ordered:
                raise ConfigurationError("partitions only applies with ordered=True")
            if self.partitions > MAX_PARTITIONS:
                raise ConfigurationError(
                    f"partitions must be at most {MAX_PARTITIONS}, not {self.partitions}"
                )

    @property
    def effective_partitions(self) -> int | None:
        """How many partitions an ordered group's topic is split into; None if not ordered."""
        if not self.ordered:
            return None
        return DEFAULT_PARTITIONS if self.partitions is None else self.partitions

    @property
    def effective_min(self) -> int:
        return 1 if self.instance is Instance.SINGLE else self.min_workers

    @property
    def effective_max(self) -> int:
        return 1 if self.instance is Instance.SINGLE else self.max_workers


def group_config(**options: object) -> GroupConfig:
    """Build a `GroupConfig` from keyword options, naming any option that does not exist."""
    unknown = options.keys() - {f.name for f in attrs.fields(GroupConfig)}
    if unknown:
        known = ", ".join(f.name for f in attrs.fields(GroupConfig))
        raise ConfigurationError(f"unknown action option(s) {sorted(unknown)}; known: {known}")
    return GroupConfig(**options)  # type: ignore[arg-type]
