"""Argument parsing and dispatch. Errors go to stderr with a non-zero exit, never as a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli import render
from daemon.cli.client import ApiClient, ClientError, quote
from daemon.errors import ConfigError, RunbookError

EXIT_INVALID = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runbookd", description="Approval-gated runbooks for a monitoring cluster."
    )
    p.add_argument("--version", action="version", version=f"runbookd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument(
        "--config",
        type=Path,
        default=Path("config.example.yaml"),
        help="config file (default: config.example.yaml)",
    )
    s.add_argument("--listen", help="HOST:PORT (overrides server.listen)")
    s.add_argument("--state", type=Path, help="SQLite file (overrides state.path)")
    s.add_argument("--dry-run", action="store_true", help="mutating actions only record their requests")

    v = sub.add_parser("validate", help="check the config and runbooks; exit 1 with file:line messages")
    v.add_argument("--config", type=Path, help="also check this config as serve would, secrets included")
    v.add_argument(
        "--without-secrets", action="store_true", help="with --config: do not read the secrets it names"
    )
    v.add_argument("paths", nargs="*", type=Path, metavar="RUNBOOK_PATH")

    pl = sub.add_parser(
        "plan", help="show which runbooks an Alertmanager payload would start; changes nothing"
    )
    pl.add_argument("--alert", type=Path, required=True, help="a webhook payload (JSON file, - for stdin)")
    pl.add_argument(
        "--config",
        type=Path,
        default=Path("config.example.yaml"),
        help="config file (default: config.example.yaml)",
    )
    pl.add_argument("--output", choices=["table", "json"], default="table")

    def client_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("--server", help="runbookd URL (default $RUNBOOKD_SERVER or http://127.0.0.1:8080)")

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--state", help="only runs in this state")
    r.add_argument("--output", choices=["table", "json"], default="table")
    client_args(r)
    sh = sub.add_parser("show", help="one run: steps, plans, approvals, timeline")
    sh.add_argument("run_id", metavar="RUN_ID")
    sh.add_argument("--output", choices=["table", "json"], default="table")
    client_args(sh)
    a = sub.add_parser("approve", help="approve the step a run waits on (as shown by `show`)")
    a.add_argument("run_id", metavar="RUN_ID")
    a.add_argument("--step", metavar="STEP_ID", help="the step to approve (default: the current one)")
    a.add_argument(
        "--plan-hash", metavar="HASH", help="approve only this plan (as `show` printed it); 409 if it changed"
    )
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation on a terminal")
    a.add_argument("--output", choices=["table", "json"], default="table")
    client_args(a)
    rj = sub.add_parser("reject", help="reject a run's current step, ending the run")
    rj.add_argument("run_id", metavar="RUN_ID")
    rj.add_argument("--reason", required=True)
    client_args(rj)
    t = sub.add_parser("trigger", help="start a run by hand")
    t.add_argument("runbook", metavar="RUNBOOK")
    t.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a runbook param (repeatable)"
    )
    t.add_argument("--output", choices=["table", "json"], default="table")
    client_args(t)
    st = sub.add_parser("state", help="the state store: migrate its schema, copy it to another store")
    st_sub = st.add_subparsers(dest="state_command", required=True, metavar="STATE_COMMAND")
    sm = st_sub.add_parser("migrate", help="apply this version's schema migrations (serve does it at start)")
    sm.add_argument(
        "--config",
        type=Path,
        default=Path("config.example.yaml"),
        help="config file (default: config.example.yaml)",
    )
    sc = st_sub.add_parser("copy", help="copy runs, approvals, timelines and records into an empty store")
    sc.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH|postgresql://...")
    sc.add_argument("--to", dest="target", required=True, metavar="postgresql://...|sqlite:PATH")
    sc.add_argument("--force", action="store_true", help="replace what the target holds")
    sc.add_argument(
        "--config", type=Path, help="take the PostgreSQL password and TLS options from this config"
    )
    ck = sub.add_parser("checks", help="scheduled checks: last fire, outcome (ok|work|error), findings")
    ck.add_argument("--output", choices=["table", "json"], default="table")
    client_args(ck)
    for name, text in (
        ("pause", "stop new steps from starting (kill switch)"),
        ("resume", "let steps start again"),
    ):
        client_args(sub.add_parser(name, help=text))
    return p


def _print(data: Any, output: str, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if output == "json" else human)


def _show_plan(run: dict[str, Any], step: dict[str, Any], plan_hash: str | None) -> None:
    run, step, plan_hash = render.defang(run), render.defang(step), render.defang(plan_hash)
    kind = "MUTATING" if step["mutating"] else "read-only"
    dry = ""
    if run["dry_run"]:
        dry = (
            " (dry-run: it only records its requests)"
            if step["mutating"]
            else " (dry-run: reads run for real)"
        )
    print(f"{run['id']} step {step['id']}: {step['action']} [{kind}]{dry}, plan {plan_hash}", file=sys.stderr)
    print(json.dumps(step.get("plan"), indent=2, sort_keys=True), file=sys.stderr)
    if step.get("undo"):
        print(render.undo_text(step["undo"]), file=sys.stderr)


def _show_undo_retry(run: dict[str, Any], step: dict[str, Any], retry_hash: str | None) -> None:
    run, step, retry_hash = render.defang(run), render.defang(step), render.defang(retry_hash)
    undo = step["undo"]
    print(
        f"{run['id']} step {step['id']}: its undo {undo['action']} failed: {undo.get('error')}\n"
        f"Approving retries that undo (retry {retry_hash}). Verify by hand first.",
        file=sys.stderr,
    )
    print(render.undo_text(undo), file=sys.stderr)


def _approve(api: ApiClient, args: argparse.Namespace) -> None:
    """Approve exactly the plan the operator is shown: the step and plan hash come from one read, the
    plan is printed (and confirmed on a terminal), and the server refuses it if it changed since."""
    run = api.get(f"/api/v1/runs/{quote(args.run_id)}")
    step_id = args.step or run.get("current_step")
    if not step_id:
        raise ClientError(f"run {args.run_id} is {run['state']}: no step to approve")
    step = next((s for s in run["steps"] if s["id"] == step_id), None)
    if step is None:
        raise ClientError(f"run {args.run_id} has no step {step_id!r}")
    undo = step.get("undo") or {}
    retry = run.get("state") == "needs_attention" and undo.get("state") == "failed"
    plan_hash = args.plan_hash or (undo.get("retry_hash") if retry else step.get("plan_hash"))
    if retry:  # approving the step retries its failed undo, bound to that failure's retry hash
        _show_undo_retry(run, step, plan_hash)
        if sys.stdin.isatty() and not args.yes and input("Retry this undo? [y/N] ").strip().lower() != "y":
            raise ClientError("not approved")
    elif step.get("state") == "awaiting_approval":
        _show_plan(run, step, plan_hash)
        if sys.stdin.isatty() and not args.yes and input("Approve this plan? [y/N] ").strip().lower() != "y":
            raise ClientError("not approved")
    # Otherwise no plan is printed (it cannot be approved); the server's answer (409) says why.
    body = {"plan_hash": plan_hash} if plan_hash else {}
    run = api.post(f"/api/v1/runs/{quote(args.run_id)}/steps/{quote(step_id)}/approve", body)
    _print(run, args.output, f"approved {step_id} of {run['id']}; run is now {render.run_state(run)}")


_MISREAD = (KeyError, IndexError, TypeError, AttributeError, ValueError)
"""What reading an answer of another shape than runbookd's raises: a key missing, a number where a list
of runs should be, a string formatted as a number."""


def _client_command(args: argparse.Namespace) -> int:
    """One client command; an answer it cannot read as runbookd's is one line (UnexpectedAnswer)."""
    api = ApiClient(args.server)
    try:
        return _call(api, args)
    except UnicodeEncodeError:
        raise  # the terminal cannot show a character: not the answer's fault (lone surrogates are refused)
    except _MISREAD:
        if api.last is None:
            raise
        raise api.unexpected("not the shape of runbookd's answer") from None


def _call(api: ApiClient, args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "runs":
        runs = api.get("/api/v1/runs", state=args.state)["runs"]
        _print(runs, args.output, render.runs_table(runs))
    elif cmd == "show":
        run = api.get(f"/api/v1/runs/{quote(args.run_id)}")
        _print(run, args.output, render.run_details(run))
    elif cmd == "approve":
        _approve(api, args)
    elif cmd == "reject":
        run = api.post(f"/api/v1/runs/{quote(args.run_id)}/reject", {"reason": args.reason})
        print(render.defang(f"rejected {run['id']}: {run['outcome']}"))
    elif cmd == "trigger":
        params: dict[str, str] = {}
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ClientError(f"--param takes KEY=VALUE, not {item!r}")
            if key in params:  # the last one would win silently: say which value was meant
                raise ClientError(f"--param {key} is given twice ({params[key]!r} and {value!r})")
            params[key] = value
        run = api.post("/api/v1/runs", {"runbook": args.runbook, "params": params})
        _print(
            run,
            args.output,
            render.defang(f"started {run['id']} ({run['runbook']} for {run['target']}): {run['state']}"),
        )
    elif cmd == "checks":
        checks = api.get("/api/v1/checks")["checks"]
        _print(checks, args.output, render.checks_table(checks))
    elif cmd in ("pause", "resume"):
        paused = api.post(f"/api/v1/{cmd}")["paused"]
        if not isinstance(paused, bool):
            raise api.unexpected("paused is not true or false")
        print("paused: no new steps will start" if paused else "resumed: approved steps may start")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from daemon.cli.serve import serve

            return serve(args.config, listen=args.listen, state=args.state, dry_run=args.dry_run)
        if args.command == "validate":
            from daemon.cli.checks import validate

            return validate(args.config, args.paths, secrets=not args.without_secrets)
        if args.command == "state":
            from daemon.cli import state

            if args.state_command == "migrate":
                return state.migrate(args.config)
            return state.copy(args.source, args.target, force=args.force, config_path=args.config)
        if args.command == "plan":
            from daemon.cli.checks import plan

            return plan(args.config, args.alert, args.output)
        return _client_command(args)
    except ConfigError as exc:
        print(f"runbookd: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunbookError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return EXIT_INVALID
    except (
        ClientError
    ) as exc:  # defanged again as a whole: it may quote the server (a run's state, TLS errors)
        print(f"runbookd: {render.defang(str(exc))}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`runbookd runs | head -2`): what it read is what it wanted.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
