"""POST /api/v1/alertmanager: 200 once stored, 400 invalid, 401 bad token, 413 too large, 503 cannot store.

Never 429 and never 2xx before the commit: Alertmanager retries 5xx only (Alertmanager's webhook contract)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from daemon.engine import quickparse
from daemon.engine.events import WebhookPayload
from daemon.errors import StoreUnavailable
from daemon.kits import strictjson
from daemon.server.auth import Unauthorized
from daemon.server.bodies import BadBody
from daemon.server.errors import bad_body, error
from daemon.server.keys import AUTH, BODIES, engine_of


def _validation_message(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()[:20]
    ]


async def alertmanager_webhook(request: web.Request) -> web.Response:
    engine = engine_of(request)
    resp = await _handle(request)
    engine.metrics.count_response(resp.status)
    return resp


async def _handle(request: web.Request) -> web.Response:
    try:
        request.app[AUTH].check_webhook(request)
    except Unauthorized as exc:
        return error(401, str(exc))
    try:
        body = await request.app[BODIES].read(request)
    except BadBody as exc:
        return bad_body(request, exc)
    engine = engine_of(request)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "body is not valid JSON (UTF-8)")
    # Most bodies are parsed the quick way (engine.quickparse); those that match no runbook are stored
    # routed, the others are routed from the same structs.
    quick = quickparse.parse(text)
    if quick is not None:
        settled = engine.settle_quick(quick)
        try:
            if settled is not None:
                receipt = await engine.submit_settled(settled)
            else:
                receipt = await engine.submit_quick(quick, text)
        except StoreUnavailable as exc:
            return _unavailable(exc)
        return _stored(len(quick.alerts), receipt)
    try:
        payload = WebhookPayload.model_validate_json(text)
        # pydantic's parser refuses lone surrogates and bounds nesting (200 levels) itself, but takes
        # NaN/Infinity and numbers out of range (1e400) in fields it ignores, and NUL characters (which
        # PostgreSQL cannot store: routing stalled on them). The body is parsed again in C for the first
        # (a body the quick parse did not take: one with a field Alertmanager does not send, say), and the
        # strings runbookd keeps are looked at for NULs: walking a 10,000-alert body in Python took a third
        # of a second of event loop.
        strictjson.refuse_constants(text)
        # A NUL can only arrive escaped (the parser refuses raw control characters). No cheaper pre-check
        # helps: Alertmanager's groupKey always holds quotes, sent escaped (\"), and its encoder escapes
        # <, > and & as \u003c, \u003e, \u0026 (json.NewEncoder in notify/webhook/webhook.go), so real
        # bodies hold backslashes and "\u" alike.
        if "\\u0000" in text and payload.holds_nul():
            raise strictjson.JSONRefused("a string holds a NUL character (\\u0000)")
    except strictjson.JSONRefused as exc:
        return error(400, f"body is not valid JSON: {exc}")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return error(400, "body is not valid JSON")
        return error(400, "not an Alertmanager webhook payload", details=_validation_message(exc))
    try:
        receipt = await engine.submit(payload, text)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return _stored(len(payload.alerts), receipt)


def _stored(alerts: int, receipt: int) -> web.Response:
    """Stored: routing (starting or attaching runs) follows at once; GET /api/v1/receipts/{receipt} shows
    it. json_response({"status": "stored", "alerts": ..., "receipt": ...}) written out: the hot path."""
    text = f'{{"status": "stored", "alerts": {alerts}, "receipt": {receipt}}}'
    return web.Response(text=text, content_type="application/json")


def _unavailable(exc: StoreUnavailable) -> web.Response:
    return error(503, f"cannot store the alerts now, retry: {exc}")
