"""docs/openapi.json is generated from daemon.server.openapi, served at /api/v1/openapi.json, and
documents exactly the operations the server routes."""

from __future__ import annotations

import json
from pathlib import Path

from support.inproc import serve
from support.slack_api import RUNBOOKS, serve_slack

from daemon.server import openapi

DOCS = Path(__file__).parent.parent / "docs" / "openapi.json"


def test_the_checked_in_document_is_generated() -> None:
    assert DOCS.read_text() == openapi.text(), "run: python -m daemon.server.openapi > docs/openapi.json"


async def test_it_is_served_without_a_token(tmp_path: Path) -> None:
    async with serve(tmp_path, {}) as d, d.session.get(d.url + "/api/v1/openapi.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.text() == DOCS.read_text()


async def test_it_documents_every_route_and_only_routes(tmp_path: Path) -> None:
    async with serve_slack(tmp_path, RUNBOOKS) as sd:
        routed = {
            (r.method, r.resource.canonical)
            for r in sd.d.app.router.routes()
            if r.method != "HEAD" and r.resource is not None
        }
    doc = json.loads(openapi.text())
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert routed - documented == set(), "served but not documented"
    assert documented - routed == openapi.PENDING, "documented but not served"


def test_every_operation_documents_its_errors() -> None:
    doc = openapi.document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (method, path)
            if op["security"]:
                assert "401" in codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413", "408"} <= codes, (method, path)
