"""``runbookd validate`` through the real console script: every error class gives exit 1 and a
``file:line: message`` line pointing at the offending line, never a traceback (design sections 3 and 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.actions.registry import default_registry
from daemon.engine import planner
from daemon.runbooks.loader import load_file

REPO = Path(__file__).resolve().parent.parent
RUNBOOKD = str(Path(sys.executable).parent / "runbookd")
MARK = "# <-"


def runbookd(
    *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [RUNBOOKD, *(str(a) for a in args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout, res.stdout
    return res


def write(folder: Path, name: str, text: str) -> tuple[Path, int]:
    """Write a runbook; return its path and the line marked with ``# <-`` (0 when unmarked)."""
    text = textwrap.dedent(text).lstrip("\n")
    path = folder / name
    path.write_text(text)
    marked = [i + 1 for i, line in enumerate(text.splitlines()) if MARK in line]
    assert len(marked) <= 1
    return path, (marked[0] if marked else 0)


def error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


def assert_points_at(res: subprocess.CompletedProcess[str], path: Path, line: int, *fragments: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    prefix = f"{path}:{line}: "
    hits = [ln for ln in error_lines(res) if ln.startswith(prefix)]
    assert hits, f"no line starting with {prefix!r} in:\n{res.stderr}"
    matching = [h for h in hits if all(f in h for f in fragments)]
    assert matching, f"no line at {prefix!r} containing {fragments} in:\n{res.stderr}"
    assert res.stdout == ""
    return matching[0]


# -- what ships validates ----------------------------------------------------------------------------------


def test_shipped_runbooks_validate() -> None:
    res = runbookd("validate", REPO / "runbooks")
    assert res.returncode == 0, res.stderr
    files = sorted((REPO / "runbooks").glob("*.y*ml"))
    assert files
    assert f"{len(files)} runbook(s) in {len(files)} file(s) valid" in res.stdout
    assert res.stderr == ""


def test_shipped_runbooks_and_example_config_validate_together() -> None:
    tokens = ("RUNBOOKD_WEBHOOK_TOKEN", "RUNBOOKD_ADMIN_TOKEN", "RUNBOOKD_ONCALL_TOKEN")
    env = {**os.environ, **{name: f"dev-{i}" for i, name in enumerate(tokens)}}
    res = runbookd("validate", "--config", "config.example.yaml", env=env)
    assert res.returncode == 0, res.stderr
    assert "config.example.yaml valid" in res.stdout
    res = runbookd(
        "validate", "--config", "config.example.yaml", "runbooks/prometheus-scrape-failure.yaml", env=env
    )
    assert res.returncode == 0, res.stderr


def test_validate_defaults_to_the_runbooks_folder() -> None:
    res = runbookd("validate")
    assert res.returncode == 0, res.stderr
    assert "runbook(s)" in res.stdout


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    res = runbookd("validate", tmp_path / "nope.yaml")
    assert_points_at(res, tmp_path / "nope.yaml", 1, "no such file")


# -- every error class, with the line it points at -----------------------------------------------------------

HEAD = """
name: t
triggers:
  - alert: SomethingBroke
"""

CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "unknown action": (
        """
        steps:
          - id: a
            action: kubernetes.rm_rf   # <-
        """,
        ("steps.0.action", "unknown action 'kubernetes.rm_rf'", "prometheus.query"),
    ),
    "unknown param key": (
        """
        steps:
          - id: a
            action: notify.log
            with:
              message: hi
              shell: "rm -rf /"   # <-
        """,
        ("steps.0.with.shell", "Extra inputs are not permitted"),
    ),
    "ill-typed expectation": (
        """
        steps:
          - id: a
            action: prometheus.query
            with:
              query: up
              expect: sometimes   # <-
        """,
        ("steps.0.with.expect", "expect must be any, empty, non_empty, or a comparison"),
    ),
    "bad duration param": (
        """
        steps:
          - id: a
            action: prometheus.query
            with: {query: up}
          - id: b
            action: prometheus.wait
            with: {query: up, timeout: 5 minutes}   # <-
        """,
        ("steps.1.with.timeout", "invalid duration '5 minutes'"),
    ),
    "silence duration out of bounds": (
        """
        steps:
          - id: a
            action: alertmanager.silence
            with:
              matchers: [{name: job, value: x}]
              duration: 30d   # <-
        """,
        ("steps.0.with.duration", "between 1m and 7d"),
    ),
    "list param given a string": (
        """
        steps:
          - id: a
            action: alertmanager.silence
            with:
              matchers: 'job="x"'   # <-
        """,
        ("steps.0.with.matchers",),
    ),
    "number where a string is needed": (
        """
        steps:
          - id: a
            action: notify.log
            with:
              message: 42   # <-
        """,
        ("steps.0.with.message", "string"),
    ),
    "bad matcher label name": (
        """
        steps:
          - id: a
            action: alertmanager.silence
            with:
              matchers:
                - {name: job, value: x}
                - {name: "not a label", value: x}   # <-
        """,
        ("steps.0.with.matchers.1.name", "not a valid Prometheus label name"),
    ),
    "missing required param": (
        """
        steps:
          - id: a
            action: prometheus.query
            with:   # <-
              expect: any
        """,
        ("steps.0.with.query", "Field required"),
    ),
    "missing with: entirely": (
        """
        steps:
          - id: a   # <-
            action: notify.log
        """,
        ("steps.0.with.message", "Field required"),
    ),
    "duplicate step id": (
        """
        steps:
          - id: a
            action: notify.log
            with: {message: one}
          - id: a   # <-
            action: notify.log
            with: {message: two}
        """,
        ("steps.1.id", "duplicate step id 'a'"),
    ),
    "later step in with": (
        """
        steps:
          - id: a
            action: notify.log
            with:
              message: "{{ steps['later'].output.message }}"   # <-
          - id: later
            action: notify.log
            with: {message: hi}
        """,
        ("steps.0.with.message", "refers to step 'later', which has not run at this point"),
    ),
    "later step in when": (
        """
        steps:
          - id: a
            action: notify.log
            when: "{{ steps.later.ok }}"   # <-
            with: {message: hi}
          - id: later
            action: notify.log
            with: {message: hi}
        """,
        ("steps.0.when", "refers to step 'later', which has not run"),
    ),
    "step refers to itself": (
        """
        steps:
          - id: a
            action: notify.log
            with: {message: "{{ steps['a'].ok }}"}   # <-
        """,
        ("steps.0.with.message", "refers to step 'a', which has not run"),
    ),
    "target refers to a step": (
        """
        target: "{{ steps['a'].output.count }}"   # <-
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
        ("target", "refers to step 'a', which has not run"),
    ),
    "unknown step": (
        """
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
          - id: b
            action: notify.log
            when: "{{ steps['nope'].ok }}"   # <-
            with: {message: hi}
        """,
        ("steps.1.when", "refers to unknown step 'nope'"),
    ),
    "unknown template name": (
        """
        steps:
          - id: a
            action: notify.log
            with:
              message: "token {{ secrets.token }}"   # <-
        """,
        ("steps.0.with.message", "unknown name(s) secrets"),
    ),
    "undeclared param": (
        """
        params:
          job: "{{ alert.labels.job }}"
        steps:
          - id: a
            action: notify.log
            with:
              message: "{{ params.job }} {{ params.x }}"   # <-
        """,
        ("steps.0.with.message", "params.x is not declared"),
    ),
    "template syntax error": (
        """
        steps:
          - id: a
            action: notify.log
            with:
              message: "{{ alert.labels.job "   # <-
        """,
        ("steps.0.with.message", "template syntax error"),
    ),
    "block syntax error": (
        """
        steps:
          - id: a
            action: notify.log
            with:
              message: "{% for %}x{% endfor %}"   # <-
        """,
        ("steps.0.with.message", "template syntax error"),
    ),
    "syntax error in when": (
        """
        steps:
          - id: a
            action: notify.log
            when: "{{ 1 + }}"   # <-
            with: {message: hi}
        """,
        ("steps.0.when", "template syntax error"),
    ),
    "bad cooldown": (
        """
        policy:
          cooldown: half an hour   # <-
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
        ("policy.cooldown", "invalid duration 'half an hour'"),
    ),
    "bad approval timeout": (
        """
        approval:
          approvers: [sre]
          timeout: -5m   # <-
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
        ("approval.timeout", "invalid duration"),
    ),
    "bad step id": (
        """
        steps:
          - id: Not_A_Slug   # <-
            action: notify.log
            with: {message: hi}
        """,
        ("steps.0.id",),
    ),
    "unknown top-level key": (
        """
        stepz: []   # <-
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
        ("stepz", "Extra inputs are not permitted"),
    ),
    "undo on a read-only step": (
        """
        steps:
          - id: a
            action: prometheus.query
            with: {query: up}
            undo:   # <-
              action: alertmanager.expire_silence
              with: {silence_id: "{{ steps['a'].output.silence_id }}"}
        """,
        ("steps.0.undo", "only a mutating step has an undo"),
    ),
    "undo with bad params": (
        """
        steps:
          - id: a
            action: alertmanager.silence
            with: {matchers: [{name: job, value: x}, {name: instance, value: y}], duration: 1h}
            undo:
              action: alertmanager.expire_silence
              with: {silence_id: "not-a-uuid"}   # <-
        """,
        ("steps.0.undo.with.silence_id", "not a silence id"),
    ),
    "undo reads a later step": (
        """
        steps:
          - id: a
            action: alertmanager.silence
            with: {matchers: [{name: job, value: x}, {name: instance, value: y}], duration: 1h}
            undo:
              action: alertmanager.expire_silence
              with: {silence_id: "{{ steps['b'].output.x }}"}   # <-
          - id: b
            action: notify.log
            with: {message: hi}
        """,
        ("steps.0.undo.with.silence_id", "refers to step 'b', which has not run at this point"),
    ),
    "bad trigger matcher": (
        """
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
        ("triggers.0.match",),
    ),
}


def test_undo_may_read_its_own_step_and_checks_must_only_read(tmp_path: Path) -> None:
    good, _ = write(
        tmp_path,
        "good.yaml",
        """
        name: good
        triggers:
          - schedule: "0 3 * * *"
            check:
              action: prometheus.query
              with: {query: up}
              when: "{{ check.output.value | length > 0 }}"
        steps:
          - id: a
            action: alertmanager.silence
            with: {matchers: [{name: job, value: x}, {name: instance, value: y}], duration: 1h}
            undo:
              action: alertmanager.expire_silence
              with: {silence_id: "{{ steps['a'].output.silence_id }}"}
        """,
    )
    res = runbookd("validate", good)
    assert res.returncode == 0, res.stderr
    bad, line = write(
        tmp_path,
        "bad.yaml",
        """
        name: bad
        triggers:
          - schedule: "0 3 * * *"
            check:
              action: alertmanager.silence   # <-
              with: {matchers: [{name: job, value: x}, {name: instance, value: y}], duration: 1h}
              when: "{{ check.ok }}"
        steps:
          - id: a
            action: notify.log
            with: {message: "{{ check.output }}"}
        """,
    )
    assert_points_at(runbookd("validate", bad), bad, line, "triggers.0.check.action", "must be read-only")
    alert, line = write(
        tmp_path,
        "alert.yaml",
        """
        name: alert
        triggers:
          - alert: X   # <-
            check: {action: prometheus.query, with: {query: up}, when: "{{ true }}"}
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
    )
    assert_points_at(runbookd("validate", alert), alert, line, "check: applies to schedule triggers only")


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_class_points_at_its_line(tmp_path: Path, case: str) -> None:
    body, fragments = CASES[case]
    head = HEAD
    if case == "bad trigger matcher":
        head = """
        name: t
        triggers:
          - alert: SomethingBroke
            match: ['severity=critical']   # <-
        """
    text = textwrap.dedent(head).lstrip("\n") + textwrap.dedent(body).lstrip("\n")
    path, line = write(tmp_path, "rb.yaml", text)
    assert line > 0
    res = runbookd("validate", path)
    assert_points_at(res, path, line, *fragments)


def test_invalid_cron_points_at_the_schedule(tmp_path: Path) -> None:
    path, line = write(
        tmp_path,
        "cron.yaml",
        """
        name: nightly
        triggers:
          - schedule: "61 * * * *"   # <-
        steps:
          - id: a
            action: notify.log
            with: {message: hi}
        """,
    )
    res = runbookd("validate", path)
    assert_points_at(res, path, line, "triggers.0.schedule", "invalid cron expression '61 * * * *'")


def test_valid_cron_is_accepted(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "cron.yaml",
        """
        name: nightly
        triggers:
          - schedule: "0 3 * * *"
        steps:
          - id: a
            action: notify.log
            with: {message: "nightly {{ run.runbook }}"}
        """,
    )
    res = runbookd("validate", path)
    assert res.returncode == 0, res.stderr


def test_invalid_yaml(tmp_path: Path) -> None:
    path, line = write(
        tmp_path,
        "bad.yaml",
        """
        name: t
        description: a: b   # <-
        """,
    )
    res = runbookd("validate", path)
    assert_points_at(res, path, line, "invalid YAML")


def test_unclosed_flow_sequence_is_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nsteps: [\n  {id: a\n")
    res = runbookd("validate", path)
    assert res.returncode == 1
    assert any(ln.startswith(f"{path}:") and "invalid YAML" in ln for ln in error_lines(res)), res.stderr


def test_hostile_files_are_refused_with_their_line_and_no_traceback(tmp_path: Path) -> None:
    """An adversarial pass: a file that is not UTF-8 and one nested 5,000 deep gave tracebacks, and 8
    levels of aliases ("billion laughs", a few hundred bytes) took 35 s and 2.4 GB before an error."""
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    cases = {
        "latin1.yaml": (b"name: t\ndescription: caf\xe9\n", 2, "not UTF-8 text"),
        "deep.yaml": (b"name: t\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n", 2, "nested deeper than 64"),
        "laughs.yaml": (("name: t\n" + "\n".join(laughs) + "\n").encode(), 3, "an alias (*a0)"),
    }
    for name, (data, line, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        res = runbookd("validate", path)
        assert_points_at(res, path, line, fragment)
        assert "Traceback" not in res.stderr, res.stderr
    ok = tmp_path / "anchor.yaml"  # an anchor alone repeats nothing: not refused for itself
    ok.write_text("name: &n t\n")
    assert "alias" not in runbookd("validate", ok).stderr


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    res = runbookd("validate", path)
    assert_points_at(res, path, 1, "must be a mapping")


@pytest.mark.parametrize(
    "text",
    [
        """
        name: t
        triggers:
          - alert: X
        name: u   # <-
        steps: []
        """,
        """
        name: t
        triggers:
          - alert: X
        steps:
          - id: a
            action: notify.log
            with:
              message: one
              message: two   # <-
        """,
    ],
    ids=["top-level", "nested"],
)
def test_duplicate_yaml_keys(tmp_path: Path, text: str) -> None:
    path, line = write(tmp_path, "dup.yaml", text)
    res = runbookd("validate", path)
    assert_points_at(res, path, line, "duplicate key")


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    path, _ = write(
        tmp_path,
        "many.yaml",
        """
        name: t
        triggers:
          - alert: X
        steps:
          - id: a
            action: nope.nope
          - id: a
            action: notify.log
            with: {message: hi, extra: 1}
          - id: c
            action: notify.log
            with: {message: "{{ steps['z'].ok }}"}
        """,
    )
    res = runbookd("validate", path)
    assert res.returncode == 1
    text = res.stderr
    assert f"{path}:6: steps.0.action: unknown action 'nope.nope'" in text
    assert f"{path}:7: steps.1.id: duplicate step id 'a'" in text
    assert f"{path}:9: steps.1.with.extra" in text
    assert f"{path}:12: steps.2.with.message: refers to unknown step 'z'" in text


def test_good_and_bad_files_in_one_folder(tmp_path: Path) -> None:
    write(tmp_path, "a-good.yaml", HEAD + "steps:\n  - {id: a, action: notify.log, with: {message: hi}}\n")
    bad, line = write(
        tmp_path,
        "b-bad.yaml",
        "name: b\ntriggers:\n  - alert: Y\nsteps:\n  - {id: a, action: notify.nope}   # <-\n",
    )
    res = runbookd("validate", tmp_path)
    assert_points_at(res, bad, line, "unknown action 'notify.nope'")
    assert "a-good.yaml" not in res.stderr


def test_duplicate_runbook_names_across_files(tmp_path: Path) -> None:
    first, _ = write(
        tmp_path, "a.yaml", HEAD + "steps:\n  - {id: a, action: notify.log, with: {message: hi}}\n"
    )
    second, line = write(
        tmp_path,
        "b.yaml",
        """
        # the same name again
        name: t   # <-
        triggers:
          - alert: Other
        steps:
          - {id: a, action: notify.log, with: {message: hi}}
        """,
    )
    res = runbookd("validate", tmp_path)
    msg = assert_points_at(res, second, line, "runbook 't' is also defined in")
    assert str(first) in msg
    # each file alone is fine
    assert runbookd("validate", first).returncode == 0
    assert runbookd("validate", second).returncode == 0


# -- with a config: approver groups ----------------------------------------------------------------------


def config_dict(tmp_path: Path, runbook_paths: list[Path], **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:18080"},
        "state": {"path": str(tmp_path / "state.db")},
        "runbooks": {"paths": [str(p) for p in runbook_paths]},
        "dry_run": True,
        "prometheus": {"url": "http://127.0.0.1:9"},
        "alertmanager": {"url": "http://127.0.0.1:9"},
        "auth": {
            "webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"},
            "tokens": [{"name": "admin", "role": "admin", "secret": {"env": "RUNBOOKD_ADMIN_TOKEN"}}],
        },
        "approvers": {"sre": ["admin", "slack:U0123ABCD"]},
    }
    cfg.update(overrides)
    return cfg


def write_config(tmp_path: Path, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_unknown_approver_group_with_config(tmp_path: Path) -> None:
    rbdir = tmp_path / "rb"
    rbdir.mkdir()
    path, line = write(
        rbdir,
        "rb.yaml",
        """
        name: t
        triggers:
          - alert: X
        approval:
          approvers: [sre, dba]   # <-
        steps:
          - {id: a, action: notify.log, with: {message: hi}}
        """,
    )
    cfg = write_config(tmp_path, config_dict(tmp_path, [rbdir]))
    res = runbookd("validate", "--config", cfg, cwd=tmp_path)
    assert_points_at(res, path, line, "approval.approvers", "group 'dba' is not defined", "sre")
    assert "'sre' is not defined" not in res.stderr
    # without a config the groups cannot be checked: valid
    assert runbookd("validate", path).returncode == 0


def test_config_paths_are_used_when_no_runbook_path_is_given(tmp_path: Path) -> None:
    rbdir = tmp_path / "rb"
    rbdir.mkdir()
    path, line = write(rbdir, "x.yaml", HEAD + "steps:\n  - {id: a, action: nope.x}   # <-\n")
    cfg = write_config(tmp_path, config_dict(tmp_path, [rbdir]))
    res = runbookd("validate", "--config", cfg, cwd=tmp_path)
    assert_points_at(res, path, line, "unknown action")


# -- config errors: key path and a clear message ----------------------------------------------------------


def _broken(tmp_path: Path, mutate: Any) -> Path:
    cfg = config_dict(tmp_path, [REPO / "runbooks"])
    mutate(cfg)
    return write_config(tmp_path, cfg)


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda c: c.update(bogus_key=1), ("bogus_key", "Extra inputs are not permitted")),
        (lambda c: c["server"].update(listen_port=1), ("server.listen_port", "Extra inputs")),
        (lambda c: c["server"].update(listen="8080"), ("server.listen", "HOST:PORT")),
        (lambda c: c["server"].update(listen="host:http"), ("server.listen", "HOST:PORT")),
        (lambda c: c["auth"].pop("webhook_token"), ("auth", "webhook_token")),
        (
            lambda c: c["approvers"].update(dba=["admin", "mallory"]),
            ("approvers.dba", "'mallory' is neither a token name nor slack:<user id>"),
        ),
        (
            lambda c: c["auth"]["tokens"][0].update(role="root"),
            ("auth.tokens.0.role", "'viewer', 'approver' or 'admin'"),
        ),
        (
            lambda c: c["auth"]["tokens"][0].update(secret={"env": "A", "file": "/x"}),
            ("auth.tokens.0.secret", "exactly one of env: or file:"),
        ),
        (lambda c: c.update(timezone="Mars/Olympus"), ("timezone", "unknown time zone")),
        (
            lambda c: c.update(approval={"default_timeout": "soon"}),
            ("approval.default_timeout", "invalid duration"),
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-nested-key",
        "listen-no-host",
        "listen-bad-port",
        "missing-webhook-token",
        "bad-approver",
        "bad-role",
        "two-secret-sources",
        "bad-timezone",
        "bad-duration",
    ],
)
def test_config_error_reports_key_path(tmp_path: Path, mutate: Any, fragments: tuple[str, ...]) -> None:
    cfg = _broken(tmp_path, mutate)
    res = runbookd("validate", "--config", cfg, cwd=tmp_path)
    assert res.returncode == 1, res.stdout
    lines = error_lines(res)
    hits = [ln for ln in lines if ln.startswith(f"{cfg}: ") and all(f in ln for f in fragments)]
    assert hits, res.stderr
    # only the config's problems: no made-up runbook errors for a config that could not be read
    assert all(ln.startswith(f"{cfg}: ") for ln in lines), res.stderr


def test_config_invalid_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server: {listen: [\n")
    res = runbookd("validate", "--config", cfg, cwd=tmp_path)
    assert res.returncode == 1
    assert error_lines(res)[0].startswith(f"{cfg}:2: invalid YAML")
    assert "line 2" not in res.stderr  # the line is in the file:line prefix, not in a parser dump
    assert "no such file" not in res.stderr


def test_config_missing_file(tmp_path: Path) -> None:
    res = runbookd("validate", "--config", tmp_path / "nope.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read" in res.stderr


def test_config_and_runbook_errors_are_reported_together(tmp_path: Path) -> None:
    path, line = write(tmp_path, "x.yaml", HEAD + "steps:\n  - {id: a, action: nope.x}   # <-\n")
    cfg = _broken(tmp_path, lambda c: c.update(bogus=1))
    res = runbookd("validate", "--config", cfg, path, cwd=tmp_path)
    assert f"{cfg}: bogus" in res.stderr
    assert_points_at(res, path, line, "unknown action")


def test_secrets_are_not_needed_to_validate_without_secrets(tmp_path: Path) -> None:
    # validate --config checks the secrets as serve does; --without-secrets works on a machine without them
    cfg = write_config(tmp_path, config_dict(tmp_path, [REPO / "runbooks"]))
    res = subprocess.run(
        [RUNBOOKD, "validate", "--config", str(cfg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 1 and "is not set" in res.stderr, res
    res = subprocess.run(
        [RUNBOOKD, "validate", "--config", str(cfg), "--without-secrets"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr


# -- templated values: accepted at load, checked when rendered ------------------------------------------

TEMPLATED = """
name: templated
triggers:
  - alert: Templated
params:
  expect: "{{ alert.labels.expect }}"
  silence_for: "{{ alert.labels.for }}"
  job: "{{ alert.labels.job }}"
steps:
  - id: check
    action: prometheus.query
    with:
      query: 'up{job="{{ params.job }}"}'
      expect: "{{ params.expect }}"
  - id: silence
    action: alertmanager.silence
    with:
      matchers: [{name: job, value: "{{ params.job }}"}]
      duration: "{{ params.silence_for }}"
"""


def test_templated_values_are_not_rejected_at_load(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "templated.yaml", TEMPLATED)
    res = runbookd("validate", path)
    assert res.returncode == 0, res.stderr


def test_templated_values_are_checked_when_rendered(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "templated.yaml", TEMPLATED)
    registry = default_registry()
    rb = load_file(path, registry).runbook
    check, silence = rb.steps
    query_action, silence_action = registry.get(check.action), registry.get(silence.action)
    assert query_action is not None and silence_action is not None

    def ctx(**params: Any) -> dict[str, Any]:
        return {"alert": {}, "params": params, "steps": {}, "run": {}, "schedule": {}}

    good = ctx(expect="> 0", silence_for="2h", job="node")
    assert planner.render_plan(check, query_action, good) == {"query": 'up{job="node"}', "expect": "> 0"}
    assert planner.render_plan(silence, silence_action, good)["duration"] == "2h"

    with pytest.raises(planner.PlanError, match=r"step check: .*expect: expect must be"):
        planner.render_plan(check, query_action, ctx(expect="sometimes", silence_for="2h", job="node"))
    with pytest.raises(planner.PlanError, match=r"step silence: .*duration: .*invalid duration"):
        planner.render_plan(silence, silence_action, ctx(expect="any", silence_for="forever", job="node"))


def test_templated_values_are_checked_by_plan(tmp_path: Path) -> None:
    rbdir = tmp_path / "rb"
    rbdir.mkdir()
    write(rbdir, "templated.yaml", TEMPLATED)
    cfg = write_config(tmp_path, config_dict(tmp_path, [rbdir]))
    alert = tmp_path / "alert.json"
    labels = {"alertname": "Templated", "expect": "sometimes", "for": "forever", "job": "node"}
    alert.write_text(
        json.dumps(
            {
                "version": "4",
                "status": "firing",
                "receiver": "runbookd",
                "alerts": [{"status": "firing", "labels": labels, "fingerprint": "f1"}],
            }
        )
    )
    res = runbookd("plan", "--config", cfg, "--alert", alert, "--output", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (run,) = json.loads(res.stdout)["runs"]
    steps = {s["id"]: s for s in run["steps"]}
    assert steps["check"]["plan"] is None
    assert "expect must be" in steps["check"]["error"]
    assert steps["silence"]["plan"] is None
    assert "invalid duration" in steps["silence"]["error"]
