"""The ``/runbook`` slash command's grammar: its text parsed into one ``Command`` (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verb = Literal["help", "list", "show", "approve", "reject", "pause", "resume"]
_NO_ARGS: dict[str, Verb] = {"help": "help", "list": "list", "pause": "pause", "resume": "resume"}
_MAX_ID = 128


class UsageError(ValueError):
    """The text is not a command; the message says what was expected."""


@dataclass(frozen=True)
class Command:
    verb: Verb
    run_id: str | None = None
    step: str | None = None
    reason: str | None = None


def _an_id(word: str, what: str) -> str:
    if len(word) > _MAX_ID or not word.isprintable():
        raise UsageError(f"{what} {word[:_MAX_ID]!r} is not a valid id")
    return word


def parse(text: str) -> Command:
    words = text.split()
    if not words:
        return Command("help")
    verb, args = words[0].lower(), words[1:]
    if verb in _NO_ARGS:
        if args:
            raise UsageError(f"`{verb}` takes no arguments")
        return Command(_NO_ARGS[verb])
    if verb == "show":
        if len(args) != 1:
            raise UsageError("usage: `/runbook show RUN_ID`")
        return Command("show", run_id=_an_id(args[0], "run"))
    if verb == "approve":
        if len(args) not in (1, 2):
            raise UsageError("usage: `/runbook approve RUN_ID [STEP]`")
        step = _an_id(args[1], "step") if len(args) == 2 else None
        return Command("approve", run_id=_an_id(args[0], "run"), step=step)
    if verb == "reject":
        if len(args) < 2:
            raise UsageError("usage: `/runbook reject RUN_ID REASON` (a rejection needs a reason)")
        reason = text.strip().split(None, 2)[2].strip()
        return Command("reject", run_id=_an_id(args[0], "run"), reason=reason)
    raise UsageError(f"unknown command {verb[:40]!r}")
