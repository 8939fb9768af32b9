"""Handlers: what a consumer calls for each message, typed or routed.

``adapt(fn)`` reads the handler's first parameter once: annotated with
``Message`` it gets the whole message; with a dataclass or a pydantic model
it gets the body decoded into that type (a body that does not fit is a
``Reject`` with the reason, since retrying cannot fix it); otherwise it gets
the body. ``Router`` picks one handler per value of a message attribute.
No I/O here: the sync and asyncio consumers share it.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.models import Message

try:  # pydantic is optional: typed bodies work with dataclasses alone.
    import pydantic
except ImportError:  # pragma: no cover - exercised where pydantic is absent
    pydantic = None  # type: ignore[assignment]


class Reject(Exception):
    """Raise from a handler to dead-letter the message now, with ``reason``.

    Use it for a message that can never succeed (bad input); any other
    exception retries with backoff. ``reason`` is usually a str; any object
    works (an exception, a number): the dead letter keeps its text, bounded.
    """

    def __init__(self, reason: object = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Handler:
    """One adapted handler: its name (for metrics), the callable, how it takes a message."""

    name: str
    fn: Callable[[Any], Any]
    is_async: bool
    argument: Callable[[Message], Any]


def _name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{name}" if module and module != "__main__" else str(name)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _first_annotation(fn: Callable[..., Any]) -> Any:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    required = [
        p for p in sig.parameters.values() if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not params or len(required) > 1:
        raise InvalidParameter(f"handler {_name(fn)} must take exactly one argument (the message or its body)")
    first = params[0]
    if first.kind is first.VAR_POSITIONAL:
        return None
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable string annotations: treat as untyped
        hints = {}
    ann = hints.get(first.name, first.annotation)
    return None if ann is first.empty or isinstance(ann, str) else ann


def _decoder(cls: type) -> Callable[[Message], Any]:
    """Body -> instance of ``cls``; a body that does not fit raises Reject."""
    label = cls.__qualname__
    if pydantic is not None:
        adapter: Any = pydantic.TypeAdapter(cls)

        def validate(m: Message) -> Any:
            try:
                return adapter.validate_python(m.body)
            except pydantic.ValidationError as e:
                raise Reject(f"body does not fit {label}: {_one_line(e)}") from e

        return validate

    def build(m: Message) -> Any:
        if not isinstance(m.body, dict):
            raise Reject(f"body does not fit {label}: expected a JSON object, got {type(m.body).__name__}")
        try:
            return cls(**m.body)
        except TypeError as e:
            raise Reject(f"body does not fit {label}: {e}") from e

    return build


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:1000]


def _body(m: Message) -> Any:
    return m.body


def _message(m: Message) -> Message:
    return m


def adapt(fn: Callable[..., Any]) -> Handler:
    """Inspect a handler once and say how to call it."""
    if isinstance(fn, Handler):
        return fn
    if not callable(fn):
        raise InvalidParameter(f"handler must be callable, got {fn!r:.80}")
    ann = _first_annotation(fn)
    argument: Callable[[Message], Any]
    if ann is Message:
        argument = _message
    elif isinstance(ann, type) and (
        dataclasses.is_dataclass(ann) or (pydantic is not None and issubclass(ann, pydantic.BaseModel))
    ):
        argument = _decoder(ann)
    else:
        argument = _body
    return Handler(_name(fn), fn, _is_async(fn), argument)


class Router:
    """Dispatch each message to one handler by a message attribute (``type``).

    router = rqueue.Router()

    @router.route("order.created")
    def created(order: Order) -> None: ...

    A message whose attribute names no handler (and no ``default``) is rejected.
    """

    def __init__(
        self,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        *,
        attribute: str = "type",
        default: Callable[..., Any] | None = None,
    ) -> None:
        self.attribute = attribute
        self._routes: dict[str, Handler] = {}
        self._default = adapt(default) if default is not None else None
        for key, fn in (handlers or {}).items():
            self.add(key, fn)

    def add(self, value: str, fn: Callable[..., Any]) -> None:
        """Send messages whose attribute equals ``value`` to ``fn``."""
        if not isinstance(value, str) or not value:
            raise InvalidParameter(f"route value must be a non-empty string, got {value!r}")
        self._routes[value] = adapt(fn)

    def route(self, value: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of ``add``."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(value, fn)
            return fn

        return register

    def handlers(self) -> list[Handler]:
        """Every handler, the default last."""
        return [*self._routes.values(), *([self._default] if self._default else [])]

    def resolve(self, message: Message) -> Handler:
        """The handler for ``message``; Reject when none matches."""
        value = message.attributes.get(self.attribute)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        found = self._routes.get(value) if isinstance(value, str) else None
        if found is None:
            found = self._default
        if found is None:
            raise Reject(f"no handler for {self.attribute}={value!r}")
        return found


def resolver(handler: Callable[..., Any] | Router) -> Callable[[Message], Handler]:
    """Message -> Handler, for a plain handler or a Router."""
    if isinstance(handler, Router):
        return handler.resolve
    adapted = adapt(handler)
    return lambda _m: adapted


def all_async(handler: Callable[..., Any] | Router) -> bool | None:
    """True if every handler is async, False if none is, None if mixed."""
    hs = handler.handlers() if isinstance(handler, Router) else [adapt(handler)]
    kinds = {h.is_async for h in hs}
    return None if len(kinds) > 1 else (kinds.pop() if kinds else False)
