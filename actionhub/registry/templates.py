"""Templates: actions declared ahead of time, and the registry that holds them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs

from ..errors import ConfigurationError
from ..job import Job
from ..payloads import Codec, codec_for, payload_type_of
from ..supervision.policy import GroupConfig, Isolation, group_config
from ..supervision.process import check_process_function

Action = Callable[[Job[Any]], Awaitable[object]]


def _codec(name: str, fn: Action, payload: object | None, config: GroupConfig) -> Codec | None:
    """The payload codec of an action: ``payload=``, else its ``Job[T]`` annotation, else none."""
    payload_type = payload if payload is not None else payload_type_of(fn, Job)
    if payload_type is None:
        return None
    if config.isolation is Isolation.PROCESS:
        raise ConfigurationError(
            f"action {name!r}: typed payloads are for actions in the hub's thread; an "
            "isolation='process' function gets the decoded JSON"
        )
    return codec_for(payload_type)


def _check_action(_: object, __: attrs.Attribute[Action], fn: Action) -> None:
    if not callable(fn):
        raise ConfigurationError(f"an action must be an async callable, not {fn!r}")


def _check_name(_: object, attribute: attrs.Attribute[str], name: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ConfigurationError(f"{attribute.name} must be a non-empty string without surrounding spaces")


@attrs.frozen(init=False)
class SlaveTemplate:
    """A slave group owned by a master action: ``SlaveTemplate("audit", audit_fn, max_workers=2)``.
    Its name and topic are ``<master>/slaves/<name>``."""

    name: str = attrs.field(validator=_check_name)
    fn: Action = attrs.field(validator=_check_action)
    config: GroupConfig
    codec: Codec | None = None

    def __init__(self, name: str, fn: Action, *, payload: object | None = None, **config: Any) -> None:
        group = group_config(**config)
        self.__attrs_init__(name, fn, group, _codec(name, fn, payload, group))
        if self.config.isolation is Isolation.PROCESS:
            check_process_function(fn)


@attrs.frozen
class WorkerTemplate:
    """An action bound to a topic with the configuration of its group."""

    name: str = attrs.field(validator=_check_name)
    fn: Action = attrs.field(validator=_check_action)
    topic: str = attrs.field(validator=_check_name)
    group: str = attrs.field(validator=_check_name)
    config: GroupConfig = attrs.field(factory=GroupConfig)
    slaves: tuple[SlaveTemplate, ...] = ()
    codec: Codec | None = None  # typed payloads (`actionhub.payloads`)

    def __attrs_post_init__(self) -> None:
        if self.config.isolation is Isolation.PROCESS:
            check_process_function(self.fn)
        names = [s.name for s in self.slaves]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"action {self.name!r} has two slaves with the same name")

    @classmethod
    def build(
        cls,
        name: str,
        fn: Action,
        *,
        topic: str | None = None,
        group: str | None = None,
        slaves: Sequence[SlaveTemplate] = (),
        payload: object | None = None,
        **config: Any,
    ) -> WorkerTemplate:
        """The template of ``hub.action``/``registry.action``: topic and group default to the
        name; ``payload``: the payload type (else the ``Job[T]`` of ``fn``'s signature)."""
        options = group_config(**config)
        return cls(
            name=name,
            fn=fn,
            topic=topic if topic is not None else name,
            group=group if group is not None else name,
            config=options,
            slaves=tuple(slaves),
            codec=_codec(name, fn, payload, options),
        )

    def slave_name(self, slave: SlaveTemplate) -> str:
        return f"{self.name}/slaves/{slave.name}"


class WorkerTemplateRegistry:
    """Actions declared ahead of time. A hub given a registry subscribes every template's topic
    when it starts and creates the template's group on its first message."""

    def __init__(self) -> None:
        self._templates: dict[str, WorkerTemplate] = {}

    def register(self, template: WorkerTemplate) -> WorkerTemplate:
        if template.name in self._templates:
            raise ConfigurationError(f"an action named {template.name!r} is already registered")
        self._templates[template.name] = template
        return template

    def template(self, name: str) -> WorkerTemplate:
        try:
            return self._templates[name]
        except KeyError:
            raise KeyError(f"no template named {name!r}") from None

    def has(self, name: str) -> bool:
        return name in self._templates

    def delete(self, name: str) -> WorkerTemplate:
        """Remove and return a template (a hub already running keeps its group)."""
        try:
            return self._templates.pop(name)
        except KeyError:
            raise KeyError(f"no template named {name!r}") from None

    def action(
        self,
        name: str,
        *,
        topic: str | None = None,
        group: str | None = None,
        slaves: Sequence[SlaveTemplate] = (),
        **config: Any,
    ) -> Callable[[Action], Action]:
        """Decorator: register ``fn`` as the template ``name``."""

        def decorate(fn: Action) -> Action:
            self.register(WorkerTemplate.build(name, fn, topic=topic, group=group, slaves=slaves, **config))
            return fn

        return decorate

    def __iter__(self) -> Iterator[WorkerTemplate]:
        return iter(list(self._templates.values()))

    def __len__(self) -> int:
        return len(self._templates)
