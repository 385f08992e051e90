"""Load runbook files and check them against the action registry, reporting ``file:line: message``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError
from pydantic import ValidationError

from daemon.actions.base import ActionRegistry
from daemon.errors import RunbookError
from daemon.runbooks import templating
from daemon.runbooks.schema import Runbook

Loc = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in lines:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        lines[key] = key_node.start_mark.line + 1
    return _Lined(mapping, lines, node.start_mark.line + 1)


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list[Any]:
    items = loader.construct_sequence(node, deep=True)
    return _LinedList(items, [n.start_mark.line + 1 for n in node.value], node.start_mark.line + 1)


class _Lined(dict[Any, Any]):
    def __init__(self, data: dict[Any, Any], lines: dict[Any, int], line: int) -> None:
        super().__init__(data)
        self.lines = lines
        self.line = line


class _LinedList(list[Any]):
    def __init__(self, data: list[Any], lines: list[int], line: int) -> None:
        super().__init__(data)
        self.lines = lines
        self.line = line


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def line_of(data: Any, loc: Iterable[str | int]) -> int:
    """The line of the deepest node of ``loc`` that exists in the loaded data."""
    line = getattr(data, "line", 1)
    node = data
    for part in loc:
        if isinstance(node, _Lined) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, _LinedList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line


@dataclass
class LoadedRunbook:
    runbook: Runbook
    path: Path
    raw: dict[str, Any] = field(repr=False)
    """The file's data as loaded (used to locate lines and to snapshot the definition)."""

    def line(self, *loc: str | int) -> int:
        return line_of(self.raw, loc)


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def _where(path: Path, raw: Any, loc: Loc) -> str:
    return f"{path}:{line_of(raw, loc)}"


def _pydantic_errors(path: Path, raw: Any, exc: ValidationError, prefix: Loc = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc: Loc = (
            *prefix,
            *(p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-")),
        )
        shown = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{_where(path, raw, loc)}: {shown}: {msg}")
    return out


def _check_action_params(
    path: Path, raw: Any, registry: ActionRegistry, name: str, with_: dict[str, Any], loc: Loc
) -> list[str]:
    """Errors for one use of an action (a step, an undo or a check): it exists, its params are valid."""
    act = registry.get(name)
    if act is None:
        shown = ".".join(str(p) for p in (*loc, "action"))
        return [
            f"{_where(path, raw, (*loc, 'action'))}: {shown}: unknown action "
            f"{name!r} (known: {', '.join(registry.names())})"
        ]
    errors = []
    templated = [p for p, _ in templating.iter_templates(with_)]
    try:
        act.params.model_validate(with_)
    except ValidationError as exc:
        for err in exc.errors():
            eloc = tuple(err["loc"])
            if err["type"] != "missing" and any(eloc[: len(t)] == t for t in templated):
                continue  # a templated value is checked when rendered, before the step runs
            full: Loc = (*loc, "with", *eloc)
            msg = err["msg"].removeprefix("Value error, ")
            shown = ".".join(str(p) for p in full)
            errors.append(f"{_where(path, raw, full)}: {shown}: {msg}")
    return errors


def _check_step_params(path: Path, raw: Any, rb: Runbook, registry: ActionRegistry) -> list[str]:
    errors = []
    for i, step in enumerate(rb.steps):
        errors += _check_action_params(path, raw, registry, step.action, step.with_, ("steps", i))
        if step.undo is None:
            continue
        act, inverse = registry.get(step.action), registry.get(step.undo.action)
        where = _where(path, raw, ("steps", i, "undo"))
        if act is not None and act.read_only:
            errors.append(
                f"{where}: steps.{i}.undo: only a mutating step has an undo ({step.action} only reads)"
            )
        if inverse is not None and inverse.read_only:
            errors.append(
                f"{where}: steps.{i}.undo.action: an undo must be a mutating action ({step.undo.action} only reads)"
            )
        errors += _check_action_params(
            path, raw, registry, step.undo.action, step.undo.with_, ("steps", i, "undo")
        )
    for i, trigger in enumerate(rb.triggers):
        if trigger.check is None:
            continue
        loc: Loc = ("triggers", i, "check")
        act = registry.get(trigger.check.action)
        if act is not None and not act.read_only:
            errors.append(
                f"{_where(path, raw, (*loc, 'action'))}: triggers.{i}.check.action: a check must be read-only "
                f"({trigger.check.action} changes things; it would run without approval)"
            )
        errors += _check_action_params(path, raw, registry, trigger.check.action, trigger.check.with_, loc)
    return errors


def _check_templates(path: Path, raw: Any, rb: Runbook) -> list[str]:
    errors = []
    sources: list[tuple[Loc, str]] = [(("target",), rb.target)]
    sources += [(("params", k), v) for k, v in rb.params.items() if isinstance(v, str)]
    for i, step in enumerate(rb.steps):
        sources += [(("steps", i, "with", *p), s) for p, s in templating.iter_templates(step.with_)]
        if step.when is not None:
            sources.append((("steps", i, "when"), step.when))
        if step.undo is not None:
            u = step.undo
            sources += [(("steps", i, "undo", "with", *p), s) for p, s in templating.iter_templates(u.with_)]
            if u.when is not None:
                sources.append((("steps", i, "undo", "when"), u.when))
    for i, trigger in enumerate(rb.triggers):
        if trigger.check is not None:
            c = trigger.check
            sources += [
                (("triggers", i, "check", "with", *p), s) for p, s in templating.iter_templates(c.with_)
            ]
            sources.append((("triggers", i, "check", "when"), c.when))
    ids = [s.id for s in rb.steps]
    for loc, source in sources:
        where, shown = _where(path, raw, loc), ".".join(str(p) for p in loc)
        try:
            ast = templating.check_syntax(source)
        except TemplateSyntaxError as exc:
            errors.append(f"{where}: {shown}: template syntax error: {exc.message}")
            continue
        in_check = loc[0] == "triggers"
        allowed = templating.CHECK_CONTEXT_NAMES if in_check else templating.CONTEXT_NAMES
        unknown = templating.free_names(ast) - allowed
        if unknown:
            errors.append(
                f"{where}: {shown}: unknown name(s) {', '.join(sorted(unknown))} "
                f"(templates see: {', '.join(sorted(allowed))})"
            )
        for p in sorted(templating.references(ast, "params") - set(rb.params)):
            errors.append(f"{where}: {shown}: params.{p} is not declared in params:")
        step_index = loc[1] if loc[0] == "steps" else -1
        assert isinstance(step_index, int)
        in_undo = len(loc) > 2 and loc[2] == "undo"  # an undo runs after its step: it may read its output
        for ref in sorted(templating.references(ast, "steps")):
            if ref not in ids:
                errors.append(f"{where}: {shown}: refers to unknown step {ref!r}")
            elif (
                loc[0] != "steps"
                or ids.index(ref) > step_index
                or (ids.index(ref) == step_index and not in_undo)
            ):
                errors.append(f"{where}: {shown}: refers to step {ref!r}, which has not run at this point")
    return errors


def _check_steps(path: Path, raw: Any, rb: Runbook) -> list[str]:
    errors, seen = [], set()
    for i, step in enumerate(rb.steps):
        if step.id in seen:
            errors.append(
                f"{_where(path, raw, ('steps', i, 'id'))}: steps.{i}.id: duplicate step id {step.id!r}"
            )
        seen.add(step.id)
    return errors


def check_runbook(
    path: Path, raw: Any, registry: ActionRegistry, groups: Iterable[str] | None = None
) -> Runbook:
    """Validate one runbook's data; raises RunbookError with every problem found."""
    if not isinstance(raw, dict):
        raise RunbookError([f"{path}:1: a runbook must be a mapping"])
    try:
        rb = Runbook.model_validate(_plain(raw))
    except ValidationError as exc:
        raise RunbookError(_pydantic_errors(path, raw, exc)) from None
    errors = _check_steps(path, raw, rb) + _check_step_params(path, raw, rb, registry)
    errors += _check_templates(path, raw, rb)
    if groups is not None:
        known = set(groups)
        for g in rb.approval.approvers:
            if g not in known:
                errors.append(
                    f"{_where(path, raw, ('approval', 'approvers'))}: approval.approvers: group {g!r} is not "
                    f"defined in the config's approvers (defined: {', '.join(sorted(known)) or 'none'})"
                )
    if errors:
        raise RunbookError(errors)
    return rb


MAX_DEPTH = 64
"""Deepest nesting of a runbook file (the shipped ones are at most 8 deep): a deeper one is refused
before the recursive YAML composer and the checks reach Python's recursion limit."""


def load_file(path: Path, registry: ActionRegistry, groups: Iterable[str] | None = None) -> LoadedRunbook:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunbookError([f"{path}:1: cannot read: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RunbookError([f"{path}:{line}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        refused = _refused(path, text)
        if refused is not None:
            raise RunbookError([refused])
        raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise RunbookError([f"{path}:{line}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise RunbookError([f"{path}:1: invalid YAML: {exc}"]) from None
    rb = check_runbook(path, raw, registry, groups)
    return LoadedRunbook(runbook=rb, path=path, raw=raw)


def _refused(path: Path, text: str) -> str | None:
    """Why the file is refused before it is composed (``path:line: ...``), from the parser's events (no
    recursion): nesting deeper than MAX_DEPTH, or an alias. An alias (``*name``) repeats a node by
    reference: 8 levels of ten aliases each ("billion laughs") is a few hundred bytes that validation
    walks as 10^8 values (35 s and 2.4 GB in an adversarial pass). A runbook is read by the people who
    approve what it does: each value is written out where it is used."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.AliasEvent):
            return f"{path}:{line}: invalid YAML: an alias (*{event.anchor}): write the value out"
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return f"{path}:{line}: invalid YAML: nested deeper than {MAX_DEPTH} levels"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def runbook_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        else:
            files.append(p)
    return files


def load_all(
    paths: Iterable[Path], registry: ActionRegistry, groups: Iterable[str] | None = None
) -> dict[str, LoadedRunbook]:
    """Every runbook in the given files and folders, by name. Raises RunbookError listing all problems."""
    group_list = list(groups) if groups is not None else None
    loaded: dict[str, LoadedRunbook] = {}
    errors: list[str] = []
    for f in runbook_files(paths):
        if not f.exists():
            errors.append(f"{f}:1: no such file or folder")
            continue
        try:
            lr = load_file(f, registry, group_list)
        except RunbookError as exc:
            errors += exc.errors
            continue
        if lr.runbook.name in loaded:
            other = loaded[lr.runbook.name].path
            errors.append(
                f"{f}:{lr.line('name')}: name: runbook {lr.runbook.name!r} is also defined in {other}"
            )
            continue
        loaded[lr.runbook.name] = lr
    if errors:
        raise RunbookError(errors)
    return loaded
