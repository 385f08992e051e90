"""Sandboxed templating (design section 3): untrusted alert labels are data, never template source."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.actions.registry import default_registry
from daemon.engine import planner
from daemon.errors import TemplateError
from daemon.runbooks import templating
from daemon.runbooks.schema import Step

REGISTRY = default_registry()


def ctx(labels: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    return {
        "alert": {"name": "X", "status": "firing", "labels": labels or {}, "annotations": {}},
        "params": params,
        "steps": {},
        "run": {"id": "r1", "runbook": "rb", "target": "t", "dry_run": True, "alert_resolved": False},
        "schedule": {},
    }


# -- untrusted values are data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        "{{ 7*7 }}",
        "{% for i in range(3) %}A{% endfor %}",
        "{% for %}",
        "{{ ''.__class__.__mro__ }}",
        "}} {{ {% raw %}",
    ],
)
def test_hostile_label_is_printed_verbatim(hostile: str) -> None:
    c = ctx({"pod": hostile})
    assert templating.render("{{ alert.labels.pod }}", c) == hostile
    assert templating.render("pod={{ alert.labels.pod }}!", c) == f"pod={hostile}!"
    # nested in a structure, the same
    assert templating.render({"a": ["x {{ alert.labels.pod }}"]}, c) == {"a": [f"x {hostile}"]}


def test_hostile_param_is_not_evaluated_twice() -> None:
    # a param rendered from a label keeps the label's text; using the param again does not evaluate it
    c = ctx({"job": "{{ 7*7 }}"})
    job = templating.render("{{ alert.labels.job }}", c)
    c["params"] = {"job": job}
    assert templating.render('up{job="{{ params.job }}"}', c) == 'up{job="{{ 7*7 }}"}'
    assert "49" not in templating.render('up{job="{{ params.job }}"}', c)


def test_plain_strings_are_not_templates() -> None:
    assert templating.render("just text { not } a template", ctx()) == "just text { not } a template"
    assert templating.render(42, ctx()) == 42
    assert templating.render(None, ctx()) is None


# -- the sandbox ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "x {{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
        "x {{ lipsum.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ params.update({'a': 1}) }}",
        "{{ alert.labels.clear() }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    ],
)
def test_sandbox_refuses_internals_and_mutation(source: str) -> None:
    c = ctx({"a": "b"}, n=1)
    with pytest.raises(TemplateError):
        templating.render(source, c)
    assert c["params"] == {"n": 1}
    assert c["alert"]["labels"] == {"a": "b"}


@pytest.mark.parametrize(
    "source",
    [
        "{{ nope }}",
        "x {{ nope }}",
        "{{ alert.labels.job }}",
        "job={{ alert.labels.job }}",
        "{{ params.missing }}",
        "{{ steps['earlier'].ok }}",
        "{% if steps['earlier'].ok %}yes{% endif %}",
    ],
)
def test_undefined_names_raise_template_error(source: str) -> None:
    with pytest.raises(TemplateError, match=r"undefined|no attribute"):
        templating.render(source, ctx({"instance": "a"}))


def test_template_error_on_bad_expression_at_render() -> None:
    with pytest.raises(TemplateError):
        templating.render("{{ 1 / 0 }}", ctx())
    with pytest.raises(TemplateError):
        templating.render("{{ params.n + 'x' }}", ctx(n=1))


# -- types -----------------------------------------------------------------------------------------------


def test_single_expression_keeps_native_types() -> None:
    c = ctx({"x": "1"}, n=3, b=True, f=0.5, l=[1, "two"], d={"k": "v"})
    assert templating.render("{{ params.n }}", c) == 3
    assert type(templating.render("{{ params.n }}", c)) is int
    assert templating.render("{{ params.b }}", c) is True
    assert templating.render("  {{ params.f }}  ", c) == 0.5
    assert templating.render("{{ params.l }}", c) == [1, "two"]
    assert templating.render("{{ params.d }}", c) == {"k": "v"}
    assert templating.render("{{ params.n > 2 }}", c) is True
    assert templating.render("{{ params.l | length }}", c) == 2
    assert templating.render("{{ alert.labels.x }}", c) == "1"  # a string stays a string


def test_mixed_templates_render_strings() -> None:
    c = ctx(n=3, b=False, l=[1, 2])
    assert templating.render("n={{ params.n }}", c) == "n=3"
    assert templating.render("{{ params.n }}{{ params.n }}", c) == "33"
    assert templating.render("{{ params.b }} and {{ params.l }}", c) == "False and [1, 2]"
    assert templating.render("{% if params.b %}yes{% else %}no{% endif %}", c) == "no"


def test_dns_label_filter_sanitises() -> None:
    assert templating.render("{{ alert.labels.x | dns_label }}", ctx({"x": "My_Pod.{{7*7}}"})) == (
        "my-pod---7-7"
    )


def test_references_and_syntax_check() -> None:
    ast = templating.check_syntax("{{ steps['a'].ok and steps.b.output }} {{ params.job }}")
    assert templating.references(ast, "steps") == {"a", "b"}
    assert templating.references(ast, "params") == {"job"}
    assert templating.free_names(ast) == {"steps", "params"}


# -- planner: should_run and render_plan -----------------------------------------------------------------


def test_when_with_undefined_step_is_a_plan_error() -> None:
    step = Step.model_validate(
        {"id": "s", "action": "notify.log", "when": "{{ steps['gone'].ok }}", "with": {"message": "m"}}
    )
    with pytest.raises(planner.PlanError, match="when"):
        planner.should_run(step, ctx())


def test_when_renders_native_bool() -> None:
    step = Step.model_validate(
        {"id": "s", "action": "notify.log", "when": "{{ params.go }}", "with": {"message": "m"}}
    )
    assert planner.should_run(step, ctx(go=True)) is True
    assert planner.should_run(step, ctx(go=False)) is False


def silence_step(name: str, value: str) -> Step:
    return Step.model_validate(
        {
            "id": "silence",
            "action": "alertmanager.silence",
            "with": {"matchers": [{"name": name, "value": value}], "duration": "1h", "comment": "c"},
        }
    )


def test_render_plan_accepts_a_clean_alert() -> None:
    action = REGISTRY.get("alertmanager.silence")
    assert action is not None
    plan = planner.render_plan(
        silence_step("{{ alert.labels.lname }}", "{{ alert.labels.job }}"),
        action,
        ctx({"lname": "job", "job": "node"}),
    )
    assert plan["matchers"] == [{"name": "job", "value": "node", "is_regex": False, "is_equal": True}]
    assert plan["duration"] == "1h"


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({"lname": "job name", "job": "node"}, "matchers.0.name"),
        ({"lname": 'job"} or vector(1) #', "job": "node"}, "matchers.0.name"),
        ({"lname": "{{ 7*7 }}", "job": "node"}, "matchers.0.name"),
        ({"lname": "job", "job": "x" * 1025}, "matchers.0.value"),
    ],
)
def test_render_plan_refuses_hostile_values(labels: dict[str, str], problem: str) -> None:
    action = REGISTRY.get("alertmanager.silence")
    assert action is not None
    step = silence_step("{{ alert.labels.lname }}", "{{ alert.labels.job }}")
    with pytest.raises(planner.PlanError) as info:
        planner.render_plan(step, action, ctx(labels))
    msg = str(info.value)
    assert "step silence" in msg
    assert "alertmanager.silence" in msg
    assert problem in msg
    assert "x" * 100 not in msg  # the hostile value is not echoed in full


def test_render_plan_label_value_at_the_limit_is_fine() -> None:
    action = REGISTRY.get("alertmanager.silence")
    assert action is not None
    plan = planner.render_plan(
        silence_step("job", "{{ alert.labels.job }}"), action, ctx({"job": "x" * 1024})
    )
    assert plan["matchers"][0]["value"] == "x" * 1024


def test_render_plan_undefined_label_is_a_plan_error() -> None:
    action = REGISTRY.get("alertmanager.silence")
    assert action is not None
    with pytest.raises(planner.PlanError, match="step silence"):
        planner.render_plan(silence_step("job", "{{ alert.labels.job }}"), action, ctx({}))


def test_render_plan_templated_duration_checked_when_rendered() -> None:
    action = REGISTRY.get("alertmanager.silence")
    assert action is not None
    step = Step.model_validate(
        {
            "id": "silence",
            "action": "alertmanager.silence",
            "with": {"matchers": [{"name": "job", "value": "x"}], "duration": "{{ params.d }}"},
        }
    )
    assert planner.render_plan(step, action, ctx(d="2h"))["duration"] == "2h"
    with pytest.raises(planner.PlanError, match="duration"):
        planner.render_plan(step, action, ctx(d="forever"))
    with pytest.raises(planner.PlanError, match="between 1m and 7d"):
        planner.render_plan(step, action, ctx(d="30d"))
