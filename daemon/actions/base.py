"""The action record, the context an action runs in, and the registry runbooks are validated against."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict

from daemon.clients.bundle import Clients as Clients  # re-exported for action modules
from daemon.config import LimitsConfig
from daemon.errors import NotConfigured
from daemon.kits.clock import Clock, SystemClock

Output = dict[str, Any]
"""What an action returns: JSON-serialisable data. ``ok`` (default True) says whether the step succeeded."""


class Params(BaseModel):
    """Base of every action's parameter model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionMemory(Protocol):
    """Durable key-value records for actions that must remember across restarts (e.g. who cordoned a
    node). Values are JSON objects. Backed by the state store."""

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    async def put(self, namespace: str, key: str, value: dict[str, Any]) -> None: ...

    async def delete(self, namespace: str, key: str) -> None: ...

    async def items(self, namespace: str) -> dict[str, dict[str, Any]]: ...


@dataclass
class ActionContext:
    run_id: str
    step_id: str
    runbook: str
    dry_run: bool
    clients: Clients
    memory: ActionMemory
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    clock: Clock = field(default_factory=SystemClock)
    log: Any = field(default_factory=structlog.get_logger)
    public_url: str | None = None

    def need(self, system: str) -> Any:
        client = getattr(self.clients, system, None)
        if client is None:
            raise NotConfigured(f"{system} is not configured: add a `{system}:` section to the config")
        return client

    def would(self, *requests: Mapping[str, Any], **extra: Any) -> Output:
        """The output of a mutating action in dry-run: the exact requests it would have sent."""
        self.log.info("dry_run.would_send", requests=len(requests))
        return {"ok": True, "dry_run": True, "requests": [dict(r) for r in requests], **extra}

    @property
    def origin(self) -> str:
        """How changes made by this step are labelled in the systems it touches."""
        return f"runbookd run {self.run_id} step {self.step_id}"


P = TypeVar("P", bound=Params)
ActionFn = Callable[[ActionContext, Any], Awaitable[Output]]


@dataclass(frozen=True)
class Action:
    name: str
    """``system.verb``, as written in a runbook's ``action:``."""
    params: type[Params]
    fn: ActionFn
    read_only: bool
    """Read-only actions change nothing; only they may be auto-approved, and they run for real in dry-run."""
    idempotent: bool
    """Safe to run again after a crash mid-way; otherwise a step found running at start needs a person."""
    description: str
    permissions: tuple[str, ...] = ()
    """API permissions needed, as ``verb group/resource[/subresource]`` (RBAC is derived from these)."""

    async def run(self, ctx: ActionContext, params: Params) -> Output:
        return await self.fn(ctx, params)


def action(
    name: str, *, read_only: bool, idempotent: bool, permissions: Iterable[str] = ()
) -> Callable[[Callable[[ActionContext, P], Awaitable[Output]]], Action]:
    """Turn ``async def fn(ctx, params: SomeParams) -> Output`` into an Action; the params model is read
    from the annotation, the description from the docstring."""

    def wrap(fn: Callable[[ActionContext, P], Awaitable[Output]]) -> Action:
        hints = typing.get_type_hints(fn)
        names = list(inspect.signature(fn).parameters)
        if len(names) != 2:
            raise TypeError(f"action {name}: expected (ctx, params)")
        model = hints.get(names[1])
        if not (isinstance(model, type) and issubclass(model, Params)):
            raise TypeError(f"action {name}: params must be annotated with a Params subclass")
        return Action(
            name=name,
            params=model,
            fn=fn,
            read_only=read_only,
            idempotent=idempotent,
            description=inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0],
            permissions=tuple(permissions),
        )

    return wrap


class ActionRegistry:
    """The actions known to one daemon instance. Built explicitly and passed around; never global."""

    def __init__(self, actions: Iterable[Action]) -> None:
        self._actions: dict[str, Action] = {}
        for a in actions:
            if a.name in self._actions:
                raise ValueError(f"action {a.name} registered twice")
            self._actions[a.name] = a

    def get(self, name: str) -> Action | None:
        return self._actions.get(name)

    def __iter__(self) -> Iterator[Action]:
        return iter(sorted(self._actions.values(), key=lambda a: a.name))

    def __len__(self) -> int:
        return len(self._actions)

    def names(self) -> list[str]:
        return sorted(self._actions)
