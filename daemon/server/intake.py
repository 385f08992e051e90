"""POST /api/v1/alertmanager: 200 once stored, 400 invalid, 401 bad token, 413 too large, 503 cannot store.

Never 429 and never 2xx before the commit: Alertmanager retries 5xx only (facts.md §1)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from daemon.engine.events import WebhookPayload
from daemon.errors import StoreUnavailable
from daemon.server.auth import Unauthorized
from daemon.server.errors import error
from daemon.server.keys import AUTH, CONFIG, engine_of


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
    limit = request.app[CONFIG].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"payload larger than {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"payload larger than {limit} bytes")
    try:
        text = body.decode("utf-8")
        payload = WebhookPayload.model_validate_json(text)
    except UnicodeDecodeError:
        return error(400, "body is not valid JSON (UTF-8)")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return error(400, "body is not valid JSON")
        return error(400, "not an Alertmanager webhook payload", details=_validation_message(exc))
    try:
        receipt = await engine_of(request).submit(payload, text)
    except StoreUnavailable as exc:
        return error(503, f"cannot store the alerts now, retry: {exc}")
    # Stored: routing (starting or attaching runs) follows at once; GET /api/v1/receipts/{receipt} shows it.
    return web.json_response({"status": "stored", "alerts": len(payload.alerts), "receipt": receipt})
