"""runbookd's error hierarchy, split by what the caller should do next.

Third-party errors (aiohttp, kubernetes-asyncio, aiobotocore) are wrapped at the client boundary into
these, with the original chained as ``__cause__``.
"""

from __future__ import annotations


class RunbookdError(Exception):
    """Base of every error runbookd raises on purpose. Its message is safe to show an operator."""


class ConfigError(RunbookdError):
    """The configuration is invalid; fix it and start again."""


class RunbookError(RunbookdError):
    """A runbook file is invalid. ``errors`` holds ``file:line: message`` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class TemplateError(RunbookdError):
    """A template could not be rendered (undefined name, bad expression, sandbox violation)."""


class ActionError(RunbookdError):
    """An action failed. The step fails; the message tells the operator why.

    ``status`` is the HTTP status the remote system answered, where there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TemporaryError(ActionError):
    """Worth retrying later (timeouts, 429, 5xx, connection refused)."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(ActionError):
    """Retrying the same request will not help (404, 422, invalid input)."""


class Refused(PermanentError):
    """The action declined before it changed anything. The engine records the step as having changed
    nothing (``refused: true``), so its undo is not run. An action that stops after a partial change
    raises another ActionError instead."""


class GuardRefused(Refused):
    """A safety guard refused the action (quorum, blast radius, shrink). Needs a person's judgement."""


class NotConfigured(Refused):
    """The system the action talks to has no section in the config."""


class StoreUnavailable(RunbookdError):
    """The state store could not commit. Callers answer 503 / retry; nothing was acted on."""


class NotFound(RunbookdError):
    """A run, step or runbook that does not exist."""


class Conflict(RunbookdError):
    """The request does not fit the current state (step not awaiting approval, run already ended)."""


class Forbidden(RunbookdError):
    """The identity may not do this (role, approver group, separation of duties)."""


class InvalidRequest(RunbookdError):
    """The request itself is wrong (unknown param, empty reason); fix it and send again."""


class LostLeadership(StoreUnavailable):
    """This replica is no longer the leader (its lease expired or another replica took over): the
    transaction was not committed, and this replica must stop routing, planning and executing."""
