"""Local checks that need no server: ``validate`` and ``plan``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.actions.registry import default_registry
from daemon.cli import render
from daemon.config import Config, load_config, resolve_secrets
from daemon.engine.events import WebhookPayload
from daemon.engine.preview import preview
from daemon.errors import ConfigError, RunbookError
from daemon.runbooks.loader import load_all, runbook_files
from daemon.server.auth import TokenAuth


def startup_checks(config: Config) -> list[str]:
    """What `serve` refuses to start with beyond the file itself: every unreadable secret (all unset
    variables at once), duplicate token secrets, the webhook token reused as an API token."""
    try:
        secrets = resolve_secrets(config)
    except ConfigError as exc:
        return str(exc).splitlines()
    try:
        TokenAuth(config.auth.tokens, secrets.tokens, secrets.webhook_token)
    except ConfigError as exc:
        return str(exc).splitlines()
    return []


def validate(config_path: Path | None, paths: list[Path], *, secrets: bool = True) -> int:
    groups = None
    plugins: list[str] = []
    problems: list[str] = []
    if config_path is not None:
        try:
            config = load_config(config_path)
            if secrets:
                problems += [f"{config_path}: {p}" for p in startup_checks(config)]
            groups, plugins = list(config.approvers), list(config.plugins)
            paths = paths or list(config.runbooks.paths)
        except ConfigError as exc:
            problems += str(exc).splitlines()
            if not paths:  # the runbook folders are in the config we could not read: do not guess
                print("\n".join(problems), file=sys.stderr)
                return 1
    paths = paths or [Path("runbooks")]
    try:
        registry = default_registry(plugins)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        loaded = load_all(paths, registry, groups)
    except RunbookError as exc:
        problems += exc.errors
        loaded = {}
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    files = len(runbook_files(paths))
    print(
        f"ok: {len(loaded)} runbook(s) in {files} file(s) valid"
        + (f"; {config_path} valid" if config_path else "")
    )
    return 0


def _payload(path: Path) -> WebhookPayload:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        return WebhookPayload.model_validate(json.loads(text))
    except OSError as exc:
        raise RunbookError([f"{path}: cannot read: {exc.strerror}"]) from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            lines = [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise RunbookError(lines) from None
        raise RunbookError([f"{path}: not valid JSON: {exc}"]) from None


def plan(config_path: Path, alert_path: Path, output: str) -> int:
    config = load_config(config_path)
    registry = default_registry(config.plugins)
    runbooks = load_all(config.runbooks.paths, registry, list(config.approvers))
    result = preview(_payload(alert_path), runbooks, registry)
    if output == "json":
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(_human(result))
    # A run that could not even be planned (a param or the target does not render) is an error.
    return 1 if any("error" in r for r in result["runs"]) else 0


def _human(result: dict[str, Any]) -> str:
    out: list[str] = []
    if not result["runs"]:
        out.append("no runbook answers these alerts")
    for r in result["runs"]:
        out.append(f"{r['alert']} -> runbook {r['runbook']}, target {r.get('target', '?')}")
        if "error" in r:
            out.append(f"  would not start: {r['error']}")
            continue
        out.append(f"  params: {json.dumps(r['params'], sort_keys=True)}")
        rows = []
        for s in r["steps"]:
            detail = s.get("error") or s.get("note") or json.dumps(s["plan"], sort_keys=True)
            rows.append((s["id"], s["action"], "mutating" if s["mutating"] else "read-only", detail))
            if s.get("undo"):
                u = s["undo"]
                when = f" once {u['when']}" if u.get("when") else ""
                undo_detail = f"at the run's end{when}: {json.dumps(u['with'], sort_keys=True)}"
                rows.append((f"{s['id']}.undo", u["action"], "mutating", undo_detail))
        out += ["  " + line for line in render.table(["STEP", "ACTION", "KIND", "PLAN"], rows).splitlines()]
        out.append("")
    if result["unmatched_alerts"]:
        out.append(f"no runbook for: {', '.join(result['unmatched_alerts'])}")
    return "\n".join(out).rstrip()
