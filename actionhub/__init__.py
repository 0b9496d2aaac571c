"""actionhub: supervised trio worker groups bound to topics on a message bus."""

from .bus.base import Bus, DeadLetter
from .bus.memory import MemoryBus
from .errors import (
    ActionHubError,
    BusError,
    ConfigurationError,
    HubStopped,
    MalformedMessage,
    Overloaded,
    ProcessActionError,
    Reject,
    Retry,
    WorkerProcessDied,
)
from .hub import ActionHub
from .job import Job
from .message import Message
from .payloads import InvalidPayload
from .registry.templates import SlaveTemplate, WorkerTemplate, WorkerTemplateRegistry
from .results import InvalidStatusRecord, MessageDead, MessageStatus
from .scheduling import Schedule
from .stats import WorkerStat
from .supervision.escalation import Escalation
from .supervision.policy import (
    Backoff,
    Behaviour,
    EscalationProtocol,
    GroupConfig,
    GroupState,
    Instance,
    Isolation,
    OnMaxRestarts,
    Start,
)

__version__ = "0.1.0"

__all__ = [
    "ActionHub",
    "ActionHubError",
    "Backoff",
    "Behaviour",
    "Bus",
    "ConfigurationError",
    "DeadLetter",
    "Escalation",
    "EscalationProtocol",
    "GroupConfig",
    "GroupState",
    "HubStopped",
    "Instance",
    "InvalidStatusRecord",
    "InvalidPayload",
    "Isolation",
    "Job",
    "MalformedMessage",
    "MemoryBus",
    "Message",
    "MessageDead",
    "MessageStatus",
    "OnMaxRestarts",
    "BusError",
    "Overloaded",
    "ProcessActionError",
    "Reject",
    "Retry",
    "Schedule",
    "SlaveTemplate",
    "Start",
    "WorkerStat",
    "WorkerTemplate",
    "WorkerTemplateRegistry",
    "WorkerProcessDied",
]
