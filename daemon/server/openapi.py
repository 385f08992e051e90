"""The OpenAPI 3.1 document of runbookd's HTTP API: the one source of ``GET /api/v1/openapi.json`` and of
``docs/openapi.json`` (``python -m daemon.server.openapi > docs/openapi.json``; a test keeps them equal).

Schemas describe what the handlers answer, loosely where the engine may grow (states are strings, objects
accept more keys), exactly where clients rely on it. The webhook's request schema is the pydantic model
the handler validates with, so the two cannot drift.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from daemon.engine.events import WebhookPayload
from daemon.store.records import RunState

VERSION = "1"
PENDING: frozenset[tuple[str, str]] = frozenset()
"""Operations documented here that this server does not route yet (none today); the fuzz skips them and a
test keeps the set exact."""
Schema = dict[str, Any]

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}


_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_TIME = {"type": "string", "description": "ISO 8601, UTC"}
_ANY: Schema = {}

_ERRORS = {
    400: "Invalid request: a body that cannot be read or is not standard JSON (no NaN/Infinity, no lone "
    "surrogates, at most 32 levels deep), or invalid fields.",
    401: "Missing or invalid credentials.",
    403: "The token's role does not allow this.",
    404: "No such run, step, runbook or receipt.",
    408: "The request body was not received within `server.body_timeout`.",
    409: "The run's state does not allow this now (stale approval, changed plan, active run).",
    413: "The request body is larger than `server.max_body_bytes`.",
    415: "A compressed body where Slack sends none (any Content-Encoding but identity), refused unread.",
    417: "An Expect header other than 100-continue (HTTP/1.1), refused unread.",
    503: "Cannot store now, runbookd is starting or shutting down, or too many bodies are being "
    "received (`server.max_pending_bodies`); retry.",
}
_SLACK_400 = (
    "Invalid request: a body that cannot be read, or a signed one that is malformed (not a UTF-8 form, "
    "a repeated field, a payload that is not a JSON object, invalid fields) or whose response_url is not "
    "on the configured Slack (`slack.api_url`'s scheme, no userinfo, and `slack.api_url`'s host[:port] "
    "or `hooks.` + its host). Nothing was done."
)
_URL_400 = (
    "Invalid request: a NUL character (%00) in the path or query, or a Transfer-Encoding other than chunked."
)
_READ_503 = "The store does not answer now, or runbookd is starting; retry."
_GET_SAYS = {400: _URL_400, 503: _READ_503}


def _schemas() -> dict[str, Schema]:
    webhook = WebhookPayload.model_json_schema(ref_template=_REF)
    defs = webhook.pop("$defs", {})
    approval = _obj({"by": _STR, "via": _STR, "at": _TIME, "plan_hash": _STR})
    executed: dict[str, Schema] = {  # what a step and its undo both show of how they ran
        "deadline": _nullable(_TIME),
        "started_at": _nullable(_TIME),
        "finished_at": _nullable(_TIME),
        "attempts": _INT,
        "output": _ANY,
        "error": _nullable(_STR),
    }
    undo = _obj(
        {},
        {
            "action": _STR,
            "with": _ANY,
            "deferred": _nullable({"type": "array"}),
            "when": _ANY,
            "timeout": _ANY,
            "state": {**_STR, "description": "pending, planned, skipped, waiting, ready, running, ..."},
            "idempotent": _BOOL,
            "params": _nullable({"type": "object"}),
            "due_at": _nullable(_TIME),
            **executed,
            "retry_hash": {
                **_nullable(_STR),
                "description": "set while the undo has failed: approving the step retries the undo, "
                "bound to this hash as plan_hash",
            },
        },
    )
    step = _obj(
        {
            "id": _STR,
            "index": _INT,
            "action": _STR,
            "state": {**_STR, "description": "pending, awaiting_approval, approved, running, ..."},
            "mutating": _BOOL,
            "idempotent": _BOOL,
            "plan": _ANY,
            "plan_hash": _nullable(_STR),
            "approvals": {"type": "array", "items": approval},
        },
        {
            "description": _STR,
            "requested_at": _nullable(_TIME),
            **executed,
            "undo": {**_nullable(undo), "description": "the step's undo, as approved with it and as it ran"},
        },
    )
    ran: dict[str, Schema] = {  # what a run's view and its summary in a list both have
        "trigger": _STR,
        "requester": _nullable(_STR),
        "dry_run": _BOOL,
        "alert_resolved": _BOOL,
        "created_at": _TIME,
        "updated_at": _TIME,
        "ended_at": _nullable(_TIME),
        "outcome": _nullable(_STR),
        "current_step": _nullable(_STR),
    }
    run = _obj(
        {
            "id": _STR,
            "runbook": _STR,
            "target": _STR,
            "state": {**_STR, "description": "awaiting_approval, running, succeeded, failed, rejected, ..."},
            "steps": {"type": "array", "items": _ref("Step")},
        },
        {
            **ran,
            "params": {"type": "object"},
            "alert": _nullable({"type": "object"}),
            "approval": {"type": "object"},
            "timeline": {"type": "array", "items": {"type": "object"}},
        },
    )
    runbook = _obj(
        {"name": _STR, "steps": {"type": "array", "items": {"type": "object"}}},
        {
            "description": _STR,
            "file": _STR,
            "alerts": {"type": "array", "items": _STR},
            "schedules": {"type": "array", "items": _STR},
            "params": {"type": "object"},
            "approval": {"type": "object"},
            "policy": {"type": "object"},
        },
    )
    receipt = _obj(
        {"receipt": _INT, "received_at": _TIME, "alerts": _INT},
        {
            "routed_at": _nullable(_TIME),
            "result": _nullable(
                _obj(
                    {},
                    {
                        "alerts": _INT,
                        "started": {"type": "array", "items": _STR},
                        "attached": {"type": "array", "items": _STR},
                        "cancelled": {"type": "array", "items": _STR},
                        "suppressed": {
                            "type": "array",
                            "description": "what was not started, and why (cooldown, daily limit, ...)",
                            "items": _obj(
                                {"runbook": _STR, "target": _nullable(_STR), "reason": _STR},
                                {"until": _nullable(_TIME)},
                            ),
                        },
                        "unmatched": {
                            "type": "array",
                            "description": "alerts no runbook answers",
                            "items": _obj({"alert": _STR, "fingerprint": _STR}),
                        },
                        "error": _STR,
                    },
                )
            ),
        },
    )
    params_value = {"anyOf": [{"type": "string", "maxLength": 4096}, {"type": "number"}, _BOOL]}
    return {
        **defs,
        "WebhookPayload": webhook,
        "Error": _obj({"error": _STR}, {"details": {"type": "array", "items": _STR}}),
        "Stored": _obj({"status": {"const": "stored"}, "alerts": _INT, "receipt": _INT}),
        "Approval": approval,
        "Step": step,
        "Run": run,
        "RunSummary": {
            "description": "A run as listed; GET /api/v1/runs/{id} has its alert, params, plans and outputs",
            **_obj(
                {
                    "id": _STR,
                    "runbook": _STR,
                    "target": _STR,
                    "state": _STR,
                    **ran,
                    "steps": {
                        "type": "array",
                        "items": _obj(
                            {"id": _STR, "index": _INT, "action": _STR, "state": _STR, "mutating": _BOOL}
                        ),
                    },
                }
            ),
        },
        "RunList": _obj({"runs": {"type": "array", "items": _ref("RunSummary")}}),
        "Runbook": runbook,
        "RunbookList": _obj({"runbooks": {"type": "array", "items": _ref("Runbook")}}),
        "Receipt": receipt,
        "Paused": _obj({"paused": _BOOL}, {"by": _STR, "at": _TIME}),
        "Status": _obj(
            {
                "version": _STR,
                "leader": {**_BOOL, "description": "this replica routes, plans, executes and notifies"},
                "routing_live": {
                    **_BOOL,
                    "description": "recovery is done on this leader and notifications are routed "
                    "(false while the webhook only stores them: start-up, follower)",
                },
                "paused": _BOOL,
                "dry_run": _BOOL,
                "store": {"enum": ["sqlite", "postgresql"]},
                "runbooks": _INT,
                "counts": _obj(
                    {
                        "runs_active": _INT,
                        "runs_by_state": {"type": "object", "additionalProperties": _INT},
                        "notifications_unrouted": {
                            **_INT,
                            "description": "notifications stored and not routed yet",
                        },
                    }
                ),
            }
        ),
        "Check": _obj(
            {"runbook": _STR, "schedule": _STR},
            {
                "trigger": {**_INT, "description": "index of the schedule trigger in the runbook"},
                "action": _STR,
                "last_fire": _nullable(_TIME),
                "outcome": _nullable({"enum": ["ok", "work", "error"]}),
                "findings": _nullable({**_INT, "description": "items the check reported as needing action"}),
                "message": _nullable(_STR),
                "run_id": _nullable({**_STR, "description": "the run the last fire started, if any"}),
                "pending": {**_BOOL, "description": "a fire is recorded and its check not finished yet"},
            },
        ),
        "Trigger": {
            **_obj({"runbook": _STR}, {"params": {"type": "object", "additionalProperties": params_value}}),
            "additionalProperties": False,
        },
        "ApproveBody": _obj(
            {},
            {
                "plan_hash": {
                    **_STR,
                    "pattern": "^[0-9a-f]{16}$",
                    "description": (
                        "the plan the approver saw (its 16 hex digits); for the step of a failed undo, "
                        "that undo's retry_hash"
                    ),
                }
            },
        ),
        "RejectBody": _obj({"reason": {"type": "string", "minLength": 1}}),
        "NoFields": {"type": "object", "maxProperties": 0, "description": "no body, or {}"},
        "SlackForm": {
            "type": "object",
            "description": "application/x-www-form-urlencoded, as Slack sends it; signed with the "
            "app's signing secret (X-Slack-Signature, X-Slack-Request-Timestamp).",
            "additionalProperties": _STR,
        },
    }


def _answer(description: str, schema: Schema | None = None, media: str = "application/json") -> Schema:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[int, Schema],
    errors: list[int],
    *,
    body: Schema | None = None,
    body_required: bool = True,
    media: str = "application/json",
    security: list[dict[str, list[str]]] | None = None,
    parameters: list[Schema] | None = None,
    op_id: str,
    says: dict[int, str] | None = None,
) -> Schema:
    """One operation; ``says`` replaces the common description of an error where the route means more."""
    op: Schema = {"operationId": op_id, "summary": summary}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {media: {"schema": body}}}
    op["security"] = security if security is not None else []
    op["responses"] = {
        **{str(code): answer for code, answer in ok.items()},
        **{str(code): _answer((says or {}).get(code, _ERRORS[code]), _ref("Error")) for code in errors},
    }
    return op


_API: list[dict[str, list[str]]] = [{"apiToken": []}]
_WEBHOOK: list[dict[str, list[str]]] = [{"webhookToken": []}]
_SLACK: list[dict[str, list[str]]] = [{"slackSignature": []}]
_READ = [401]
"""Reads need the viewer role, which every token has: no 403."""
_ACT = [400, 401, 403, 404, 408, 409, 413, 417, 503]


def _path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or _STR,
    }


def _paths() -> dict[str, Schema]:
    run_id = _path_param("run_id", "a run's id")
    run = _answer("The run as it is now.", _ref("Run"))
    return {
        "/api/v1/alertmanager": {
            "post": _op(
                "Alertmanager webhook: answered 200 once the notification is committed",
                {200: _answer("Stored; routing follows (see the receipt).", _ref("Stored"))},
                [400, 401, 408, 413, 417, 503],
                body=_ref("WebhookPayload"),
                security=_WEBHOOK,
                op_id="alertmanagerWebhook",
            )
        },
        "/api/v1/runs": {
            "get": _op(
                "List runs, newest first (at most 200)",
                {200: _answer("Runs.", _ref("RunList"))},
                [400, *_READ, 503],
                security=_API,
                parameters=[
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": [s.value for s in RunState]},
                    }
                ],
                op_id="listRuns",
                says={400: f"{_URL_400[:-1]}, or an unknown state.", 503: _READ_503},
            ),
            "post": _op(
                "Start a run of a runbook by hand (manual trigger)",
                {201: _answer("The new run.", _ref("Run"))},
                _ACT,
                body=_ref("Trigger"),
                security=_API,
                op_id="createRun",
            ),
        },
        "/api/v1/runs/{run_id}": {
            "get": _op(
                "One run: steps, approvals and timeline",
                {200: run},
                [400, *_READ, 404, 503],
                security=_API,
                parameters=[run_id],
                op_id="getRun",
                says=_GET_SAYS,
            )
        },
        "/api/v1/runs/{run_id}/steps/{step_id}/approve": {
            "post": _op(
                "Approve a step (as the plan with plan_hash, when given)",
                {200: run},
                _ACT,
                body=_ref("ApproveBody"),
                body_required=False,
                security=_API,
                parameters=[run_id, _path_param("step_id", "the step's id")],
                op_id="approveStep",
            )
        },
        "/api/v1/runs/{run_id}/reject": {
            "post": _op(
                "Reject a run, with a reason",
                {200: run},
                _ACT,
                body=_ref("RejectBody"),
                security=_API,
                parameters=[run_id],
                op_id="rejectRun",
            )
        },
        "/api/v1/runbooks": {
            "get": _op(
                "The loaded runbooks",
                {200: _answer("Runbooks.", _ref("RunbookList"))},
                [400, *_READ, 503],
                security=_API,
                op_id="listRunbooks",
                says=_GET_SAYS,
            )
        },
        "/api/v1/receipts/{seq}": {
            "get": _op(
                "What one stored Alertmanager notification did (once routed)",
                {200: _answer("The receipt.", _ref("Receipt"))},
                [400, *_READ, 404, 503],
                security=_API,
                parameters=[_path_param("seq", "the receipt number the webhook answered", _INT)],
                op_id="getReceipt",
                says={400: f"{_URL_400[:-1]}, or a receipt that is not a number.", 503: _READ_503},
            )
        },
        "/api/v1/checks": {
            "get": _op(
                "Scheduled checks: last fire and outcome of each",
                {200: _answer("Checks.", _obj({"checks": {"type": "array", "items": _ref("Check")}}))},
                [400, *_READ, 503],
                security=_API,
                op_id="listChecks",
                says=_GET_SAYS,
            )
        },
        "/api/v1/pause": {
            "post": _op(
                "Pause: no new step starts until resumed",
                {200: _answer("Paused.", _ref("Paused"))},
                [400, 401, 403, 408, 413, 417, 503],
                body=_ref("NoFields"),
                body_required=False,
                security=_API,
                op_id="pause",
            )
        },
        "/api/v1/resume": {
            "post": _op(
                "Resume after a pause",
                {200: _answer("Resumed.", _ref("Paused"))},
                [400, 401, 403, 408, 413, 417, 503],
                body=_ref("NoFields"),
                body_required=False,
                security=_API,
                op_id="resume",
            )
        },
        "/api/v1/status": {
            "get": _op(
                "Paused or not, dry run or not, runbooks loaded",
                {200: _answer("Status.", _ref("Status"))},
                [400, *_READ, 503],
                security=_API,
                op_id="status",
                says=_GET_SAYS,
            )
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "This document",
                {200: _answer("OpenAPI 3.1.", {"type": "object"})},
                [400],
                op_id="openapi",
                says=_GET_SAYS,
            )
        },
        "/slack/interactions": {
            "post": _op(
                "Slack button clicks and dialog submissions (signed by Slack)",
                {200: _answer("Acknowledged; the answer follows through the response_url.")},
                [400, 401, 408, 413, 415, 417, 503],
                body=_ref("SlackForm"),
                media="application/x-www-form-urlencoded",
                security=_SLACK,
                op_id="slackInteractions",
                says={400: _SLACK_400},
            )
        },
        "/slack/commands": {
            "post": _op(
                "The /runbook slash command (signed by Slack)",
                {200: _answer("Acknowledged, or an immediate ephemeral answer.")},
                [400, 401, 408, 413, 415, 417, 503],
                body=_ref("SlackForm"),
                media="application/x-www-form-urlencoded",
                security=_SLACK,
                op_id="slackCommands",
                says={400: _SLACK_400},
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {200: _answer("Text exposition format.", _STR, "text/plain")},
                [400, 503],
                op_id="metrics",
                says={400: _URL_400},
            )
        },
        "/healthz": {
            "get": _op(
                "Liveness",
                {200: _answer("Alive.", _obj({"status": _STR}))},
                [400],
                op_id="healthz",
                says=_GET_SAYS,
            )
        },
        "/readyz": {
            "get": _op(
                "Readiness: the store answers",
                {
                    200: _answer("Ready.", _obj({"status": _STR})),
                    503: _answer("Not ready.", _obj({"status": _STR})),
                },
                [400],
                op_id="readyz",
                says=_GET_SAYS,
            )
        },
    }


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runbookd",
            "version": VERSION,
            "description": "Alertmanager webhooks in, runbooks run step by step, every step approved. "
            "See docs/http-api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from auth.tokens (role viewer, approver or admin).",
                },
                "webhookToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "auth.webhook_token, Alertmanager's own.",
                },
                "slackSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Slack-Signature",
                    "description": "v0=HMAC-SHA256 of v0:<X-Slack-Request-Timestamp>:<body> with the "
                    "signing secret; the timestamp within 5 minutes; each signature accepted once.",
                },
            },
        },
    }


def text() -> str:
    """The document as served and as checked into docs/openapi.json."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m daemon.server.openapi > docs/openapi.json
    sys.stdout.write(text())
