"""Typed payloads: an action that says what it takes (``job: Job[Charge]`` or ``payload=Charge``)
gets it validated and decoded on delivery; a payload that does not validate is dead-lettered as
malformed, never run, never retried.

Types are pydantic v2 models and whatever pydantic's ``TypeAdapter`` takes (dataclasses,
TypedDict, ``list[int]``, ...), or msgspec Structs when msgspec is installed. Both libraries are
optional (``actionhub[pydantic]``, ``actionhub[msgspec]``): an untyped action imports neither.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from .errors import ConfigurationError
from .message import JSON


class InvalidPayload(ValueError):
    """A payload does not validate against its type: on delivery, the message is malformed
    (dead-lettered); a reply of a ``request(..., reply_type=...)``, this is raised."""


class Codec(Protocol):
    """How one payload type is decoded on delivery, encoded for the wire, and described."""

    def decode(self, value: JSON) -> Any: ...

    def schema(self) -> dict[str, Any]: ...


@attrs.frozen
class _Pydantic:
    adapter: Any

    def decode(self, value: JSON) -> Any:
        import pydantic

        try:
            return self.adapter.validate_python(value)
        except pydantic.ValidationError as error:
            raise InvalidPayload(_one_line(error)) from None

    def schema(self) -> dict[str, Any]:
        return dict(self.adapter.json_schema())


@attrs.frozen
class _Msgspec:
    type: Any

    def decode(self, value: JSON) -> Any:
        import msgspec

        try:
            return msgspec.convert(value, self.type)
        except msgspec.ValidationError as error:
            raise InvalidPayload(str(error)) from None

    def schema(self) -> dict[str, Any]:
        import msgspec

        return dict(msgspec.json.schema(self.type))


def _one_line(error: Any) -> str:
    """pydantic's errors, each as ``loc: msg``, on one line."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "payload"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _is_struct(payload_type: object) -> bool:
    try:
        import msgspec
    except ImportError:
        return False
    return isinstance(payload_type, type) and issubclass(payload_type, msgspec.Struct)


def codec_for(payload_type: object) -> Codec:
    """The codec of ``payload_type``; `ConfigurationError` if no installed library takes it."""
    if _is_struct(payload_type):
        return _Msgspec(payload_type)
    try:
        import pydantic
    except ImportError:
        raise ConfigurationError(
            f"payload type {payload_type!r} needs pydantic (pip install 'actionhub[pydantic]'), "
            "or a msgspec Struct (pip install 'actionhub[msgspec]')"
        ) from None
    try:
        return _Pydantic(pydantic.TypeAdapter(typing.cast(Any, payload_type)))
    except pydantic.PydanticSchemaGenerationError as error:
        first_line = str(error).splitlines()[0]
        raise ConfigurationError(
            f"pydantic cannot validate payload type {payload_type!r}: {first_line}"
        ) from None


def payload_type_of(fn: Callable[..., object], job_type: type) -> object | None:
    """The ``T`` of an action declared ``async def fn(job: Job[T])``, or None if it says none.
    `ConfigurationError` if the annotation names a type that cannot be resolved."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    annotation = parameters[0].annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(fn)[parameters[0].name]
        except Exception as error:  # a NameError, usually: a type defined where fn cannot see it
            if "Job[" in annotation:
                raise ConfigurationError(
                    f"cannot resolve the payload type of {getattr(fn, '__name__', fn)!r} from "
                    f"{annotation!r} ({error}); pass payload=... to the action"
                ) from None
            return None
    if typing.get_origin(annotation) is job_type:
        (payload_type,) = typing.get_args(annotation)
        return None if payload_type is Any else payload_type
    return None


def to_json(payload: object) -> JSON:
    """``payload`` as plain JSON values: a pydantic model, a msgspec Struct or a dataclass
    instance is encoded the way its library does; anything else is returned as it is."""
    if _is_struct(type(payload)):
        import msgspec

        value: JSON = msgspec.to_builtins(payload)
        return value
    dump = getattr(payload, "model_dump", None)
    if dump is not None and callable(dump):  # a pydantic model
        return typing.cast(JSON, dump(mode="json"))
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        return typing.cast(JSON, dataclasses.asdict(payload))
    return typing.cast(JSON, payload)


def decode_reply(value: JSON, reply_type: object) -> Any:
    """A reply's payload as ``reply_type`` (`InvalidPayload` if it does not validate)."""
    return codec_for(reply_type).decode(value)


__all__ = ["Codec", "InvalidPayload", "codec_for", "decode_reply", "payload_type_of", "to_json"]
