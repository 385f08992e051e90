"""Sandboxed Jinja2 templates. Undefined names are errors; a template that is exactly ``{{ expr }}``
keeps the expression's native type (bool, number, list), every other template renders to a string.

Alert labels are untrusted: they are data in the context, never template source, so a label value that
looks like ``{{ ... }}`` is printed as-is, not evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from daemon.errors import TemplateError

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
CONTEXT_NAMES = frozenset({"alert", "params", "steps", "run", "schedule", "check"})
"""Names a step's templates see; ``check`` is the scheduled check's result in runs a check started."""
CHECK_CONTEXT_NAMES = frozenset({"params", "schedule", "check"})
"""Names a scheduled check's own templates see (there is no run yet)."""


def promql_string(value: object) -> str:
    """Escape a value for a double-quoted PromQL string, so an alert label cannot close the string and
    change the query (a job label of ``x"} or vector(1) or up{job="``)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_escape(value: object) -> str:
    """Escape a value for a regex matcher (=~) built from a label."""
    return re.escape(str(value))


def target_part(value: object) -> str:
    """Escape one part of a run's target whose parts are joined with ``/``: ``%`` and ``/`` written as
    ``%25`` and ``%2F``. A run's identity is (runbook, target); without it ``job="blackbox/https:"``,
    ``instance="/api.example.com/health"`` rendered the same target as ``job="blackbox"``,
    ``instance="https://api.example.com/health"``, and a chosen alert took over (or held back with its
    cooldown) another target's run."""
    return str(value).replace("%", "%25").replace("/", "%2F")


def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["dns_label"] = lambda v: re.sub(r"[^a-z0-9-]", "-", str(v).lower()).strip("-")[:63]
    env.filters["promql"] = promql_string
    env.filters["regex_escape"] = regex_escape
    env.filters["target_part"] = target_part
    return env


ENV = _env()


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _single_expression(source: str) -> str | None:
    m = _SINGLE_EXPR.match(source)
    if m and "}}" not in m.group("expr") and "{{" not in m.group("expr"):
        return m.group("expr")
    return None


_DOTTED = re.compile(r"^\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\s*$")
"""An expression that only looks up keys (``alert.labels.job``, ``params.job``): the common target."""
_MISS = object()


ALERT_FIELDS = frozenset({"name", "status", "fingerprint", "startsAt", "endsAt", "generatorURL"})
"""The scalar fields of the ``alert`` a template sees (``daemon.engine.events.Alert.as_context``)."""
ALERT_MAPS = frozenset({"labels", "annotations"})
_VARYING_GLOBALS = frozenset({"lipsum", "cycler", "joiner"})
"""Jinja globals whose output differs between renders (random text, objects printed with their address)."""


def alert_reads(source: str) -> frozenset[tuple[str, ...]] | None:
    """What a template reads of ``alert``: ``("labels", "job")`` for one label, ``("labels",)`` when it
    reads the labels as a whole, ``("status",)`` for a field. None when it may see more than that (the
    alert itself handed on, ``alert`` rebound, a label named like a dict method). Rendering the template
    with the same values there gives the same result, whatever else the alert holds."""
    try:
        tree = check_syntax(source)
    except TemplateSyntaxError:
        return None
    if any(f.name == "random" for f in tree.find_all(nodes.Filter)) or any(
        n.name in _VARYING_GLOBALS for n in tree.find_all(nodes.Name)
    ):
        return None  # renders differently each time, whatever it reads: never shared between alerts
    parents: dict[int, nodes.Node] = {}
    for each in tree.find_all(nodes.Node):
        for child in each.iter_child_nodes():
            parents[id(child)] = each
    reads: set[tuple[str, ...]] = set()
    for name in tree.find_all(nodes.Name):
        if name.name != "alert":
            continue
        if name.ctx != "load":  # {% set alert = ... %}, a loop or macro argument called alert
            return None
        path: list[str] = []
        node: nodes.Node = name
        while len(path) < 2 and (key := _key_of(parents.get(id(node)), node)) is not None:
            path.append(key)
            node = parents[id(node)]
        if not path or path[0] not in ALERT_FIELDS | ALERT_MAPS:
            return None
        if len(path) == 2 and path[0] in ALERT_MAPS:
            if hasattr(dict, path[1]):  # alert.labels.items is the method, not a label
                return None
            reads.add((path[0], path[1]))
        elif path[0] in ALERT_FIELDS:
            reads.add((path[0],))
        else:  # the map itself: (alert.labels | default({})).x reads one label, anything else all of them
            outer = parents.get(id(node))
            key = _key_of(parents.get(id(outer)), outer) if _is_plain_default(outer, node) else None
            reads.add((path[0], key) if key is not None and not hasattr(dict, key) else (path[0],))
    return frozenset(reads)


def _key_of(parent: nodes.Node | None, child: nodes.Node | None) -> str | None:
    """The constant key ``parent`` looks up in ``child`` (``child.x``, ``child['x']``), if it does."""
    if isinstance(parent, nodes.Getattr) and parent.node is child:
        return parent.attr
    if (
        isinstance(parent, nodes.Getitem)
        and parent.node is child
        and isinstance(parent.arg, nodes.Const)
        and isinstance(parent.arg.value, str)
    ):
        return parent.arg.value
    return None


def _is_plain_default(node: nodes.Node | None, of: nodes.Node) -> bool:
    """``of | default`` or ``of | default({})``: the map itself (a map is never undefined) or an empty one."""
    if not (isinstance(node, nodes.Filter) and node.name == "default" and node.node is of):
        return False
    if node.kwargs or node.dyn_args or node.dyn_kwargs:
        return False
    return all(isinstance(a, nodes.Dict) and not a.items for a in node.args)


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    expr = _single_expression(source)
    if expr is not None:
        dotted = _DOTTED.match(expr)
        path = tuple(dotted.group(1).split(".")) if dotted else None
        return ("expr", ENV.compile_expression(expr, undefined_to_none=False), path)
    return ("text", ENV.from_string(source), None)


def _lookup(path: tuple[str, ...], context: dict[str, Any]) -> Any:
    """``a.b.c`` over plain dicts without Jinja (a new Jinja context costs ~40 us), when Jinja would give
    the same: every step is a dict key that is not also an attribute of dict (``items``), and the value is
    a scalar. Anything else returns _MISS and is left to Jinja (errors included)."""
    value = context.get(path[0], _MISS)
    for name in path[1:]:
        if type(value) is not dict or name not in value or hasattr(value, name):
            return _MISS
        value = value[name]
    return value if type(value) in (str, int, float, bool) else _MISS


def check_syntax(source: str) -> nodes.Template:
    """Parse a template; raises TemplateSyntaxError. Returns the AST for reference checks."""
    expr = _single_expression(source)
    return ENV.parse("{{" + expr + "}}" if expr is not None else source)


def render_value(source: str, context: dict[str, Any]) -> Any:
    try:
        kind, compiled, path = _compile(source)
        if path is not None and (value := _lookup(path, context)) is not _MISS:
            return value
        if kind == "expr":
            value = compiled(**context)
            if isinstance(value, Undefined):  # a bare {{ missing }} returns Undefined instead of raising
                value = str(value)  # StrictUndefined raises UndefinedError (SecurityError if unsafe)
            return value
        return compiled.render(**context)
    except UndefinedError as exc:
        raise TemplateError(f"{exc.message} in {source!r}") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, JinjaTemplateError) as exc:
        # JinjaTemplateError: the rest of Jinja's own (TemplateRuntimeError: {% set alert.x = 1 %})
        raise TemplateError(f"cannot render {source!r}: {exc}") from None


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every template string inside a structure of dicts, lists and scalars."""
    if isinstance(value, str):
        return render_value(value, context) if is_template(value) else value
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def iter_templates(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every template string in a structure, with its path."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_templates(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_templates(v, (*path, i))


def references(ast: nodes.Template, root: str) -> set[str]:
    """Names used as ``root.name`` or ``root['name']`` in a template."""
    found: set[str] = set()
    for node in ast.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == root:
            found.add(node.attr)
    for item in ast.find_all(nodes.Getitem):
        assert isinstance(item, nodes.Getitem)
        named = isinstance(item.node, nodes.Name) and item.node.name == root
        if named and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            found.add(item.arg.value)
    return found


def free_names(ast: nodes.Template) -> set[str]:
    from jinja2 import meta

    return set(meta.find_undeclared_variables(ast))
