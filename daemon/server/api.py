"""The JSON API (design section 7). Viewers read; approvers and admins act."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from daemon.engine.identity import Identity, Role
from daemon.errors import Forbidden, InvalidRequest
from daemon.server import expect
from daemon.server.answers import json_response
from daemon.server.bodies import json_object
from daemon.server.keys import AUTH, BODIES, engine_of

_PLAN_HASH = re.compile(r"[0-9a-f]{16}")
"""A plan's hash as ``engine.planner.plan_hash`` writes it: anything else is refused, not echoed back."""

MAX_PARAM_VALUE = 4096
"""Longest string a manual trigger may give a param (the limit on an alert label's value)."""


def _who(request: web.Request, role: Role = "viewer") -> Identity:
    identity = request.app[AUTH].identity(request)
    if not identity.at_least(role):
        raise Forbidden(f"{identity.name} has role {identity.role}; this needs {role}")
    return identity


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON object (standard JSON, bounded depth, no lone surrogates), ``{}`` without a body."""
    return await json_object(request.app[BODIES], request)


async def list_runs(request: web.Request) -> web.Response:
    _who(request)
    state = request.query.get("state")
    return json_response({"runs": await engine_of(request).run_summaries(state)})


async def get_run(request: web.Request) -> web.Response:
    _who(request)
    return json_response(await engine_of(request).get_run(request.match_info["run_id"]))


async def approve_step(request: web.Request) -> web.Response:
    identity = _who(request)
    body = await _body(request)
    plan_hash = body.get("plan_hash")
    if plan_hash is not None and not (isinstance(plan_hash, str) and _PLAN_HASH.fullmatch(plan_hash)):
        raise InvalidRequest("plan_hash must be the 16 hex digits of a plan (as GET /api/v1/runs/{id} shows)")
    run = await engine_of(request).approve(
        request.match_info["run_id"], request.match_info["step_id"], identity, plan_hash
    )
    return json_response(run)


async def reject_run(request: web.Request) -> web.Response:
    identity = _who(request)
    reason = (await _body(request)).get("reason")
    if not isinstance(reason, str):
        raise InvalidRequest('a rejection needs {"reason": "..."}')
    return json_response(await engine_of(request).reject(request.match_info["run_id"], identity, reason))


async def create_run(request: web.Request) -> web.Response:
    identity = _who(request)
    body = await _body(request)
    runbook, params = body.get("runbook"), body.get("params", {})
    unknown = sorted(set(body) - {"runbook", "params"})
    if not isinstance(runbook, str) or not isinstance(params, dict) or unknown:
        extra = f" (unknown field(s): {', '.join(unknown)[:200]})" if unknown else ""
        raise InvalidRequest('expected {"runbook": NAME, "params": {KEY: VALUE}}' + extra)
    if not all(isinstance(v, str | int | float | bool) for v in params.values()):
        raise InvalidRequest("param values must be strings, numbers or booleans")
    long = sorted(k for k, v in params.items() if isinstance(v, str) and len(v) > MAX_PARAM_VALUE)
    if long:  # as an alert label's value: params end up in plans, the timeline, Slack and logs
        raise InvalidRequest(f"param(s) {', '.join(long)[:200]} longer than {MAX_PARAM_VALUE} characters")
    run = await engine_of(request).trigger(runbook, params, identity)
    return json_response(run, status=201)


async def get_receipt(request: web.Request) -> web.Response:
    """What one Alertmanager notification did: runs started, attached, cancelled (once routed)."""
    _who(request)
    seq = request.match_info["seq"]
    if not (seq.isascii() and seq.isdigit()) or len(seq) > 18:  # SQLite integers are 64-bit
        raise InvalidRequest("a receipt is a number")
    return json_response(await engine_of(request).receipt(int(seq)))


async def list_runbooks(request: web.Request) -> web.Response:
    _who(request)
    return json_response({"runbooks": engine_of(request).runbook_list()})


async def list_checks(request: web.Request) -> web.Response:
    _who(request)
    return json_response({"checks": await engine_of(request).list_checks()})


async def pause(request: web.Request) -> web.Response:
    identity = _who(request)
    await _no_fields(request)
    return json_response(await engine_of(request).set_paused(True, identity))


async def resume(request: web.Request) -> web.Response:
    identity = _who(request)
    await _no_fields(request)
    return json_response(await engine_of(request).set_paused(False, identity))


async def _no_fields(request: web.Request) -> None:
    """No body, or ``{}``: a body that is not JSON (or is JSON with fields) was meant for something else,
    and a kill switch is not thrown on a request nobody can read (400, nothing changed)."""
    fields = sorted(await _body(request))
    if fields:
        raise InvalidRequest(f"{request.path} takes no fields; got {', '.join(fields[:10])[:200]}")


async def status(request: web.Request) -> web.Response:
    """version, leader, routing_live (recovery done, notifications routed), paused, dry_run, store backend,
    runbooks loaded, counts (active runs, runs by state, notifications stored and not routed yet)."""
    _who(request)
    return json_response(await engine_of(request).status())


_EXPECT = expect.expect_handler(expect.api)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/runs", list_runs)
    app.router.add_post("/api/v1/runs", create_run, expect_handler=_EXPECT)
    app.router.add_get("/api/v1/runs/{run_id}", get_run)
    app.router.add_post("/api/v1/runs/{run_id}/steps/{step_id}/approve", approve_step, expect_handler=_EXPECT)
    app.router.add_post("/api/v1/runs/{run_id}/reject", reject_run, expect_handler=_EXPECT)
    app.router.add_get("/api/v1/runbooks", list_runbooks)
    app.router.add_get("/api/v1/receipts/{seq}", get_receipt)
    app.router.add_post("/api/v1/pause", pause, expect_handler=_EXPECT)
    app.router.add_post("/api/v1/resume", resume, expect_handler=_EXPECT)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/checks", list_checks)
