"""OpenSearch 2.x, played on loopback: the snapshot, index, _cat, settings, alias and data stream APIs that
runbookd calls, with the answers and error bodies the documentation and the server's source give.

OpenSearch is not installable here, so this server follows the documented shapes
(docs.opensearch.org/latest/api-reference/, shared/facts.md section 5):

- ``GET _cat/indices[/{pattern}]?format=json&h=...``: every value a string, ``creation.date`` in epoch ms;
  a wildcard matching nothing answers ``[]``, a missing concrete name 404 ``index_not_found_exception``;
  a pattern matching a data stream's name stands for its backing indices.
- Snapshots: ``PUT _snapshot/{repo}/{snap}`` answers ``{"accepted": true}`` and the snapshot is
  ``IN_PROGRESS`` until it completes (after ``polls`` reads of it, or when the test ``finish``es a held
  one) in the state the test chose (``SUCCESS`` by default, ``PARTIAL`` with failed shards, ``FAILED``).
  At most ``max_concurrent_operations`` (1000, the 2.x default of ``snapshot.max_concurrent_operations``)
  run at once; one more answers 503 ``concurrent_snapshot_execution_exception``. A snapshot captures each
  index's document count at its start (``captured``) and, for the tests only, which index it copied
  (``copied``: name -> ``index.uuid``). As in OpenSearch, the snapshot API lists index names only: no uuid
  of a snapshotted index is ever in an answer (SnapshotInfo's ``indices`` is a list of names).
- Every index has its own ``uuid`` and ``creation.date`` (``_cat/indices`` columns ``uuid`` and
  ``creation.date``, settings ``index.uuid`` and ``index.creation_date``); an index deleted and created
  again under the same name (``add_index`` of a name again) gets a new uuid and a new creation date.
- ``DELETE /{index}`` of an index a running snapshot copies answers 400 ``snapshot_in_progress_exception``;
  of a data stream's write index 400 ``illegal_argument_exception``; of an alias 400.
- ``index.blocks.write``: a document write to a blocked index answers 403 ``cluster_block_exception``.
- ``POST _snapshot/{repo}/_verify`` fails with 500 ``repository_verification_exception`` when told to.
- Security: with ``users`` or ``tokens`` set, a request without valid credentials answers 401 (plain text,
  as the security plugin does) and ``forbid`` makes an operation answer 403 ``security_exception``.
- ``fail_next(status, ...)`` makes the next matching requests answer 429/5xx with OpenSearch's JSON error.
"""

from __future__ import annotations

import base64
import fnmatch
import itertools
import json
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

VERSION = {"number": "2.11.1", "distribution": "opensearch", "lucene_version": "9.7.0"}
VERSION_ID = 136327827
_ids = itertools.count(1)


def error_body(status: int, type_: str, reason: str, **extra: Any) -> dict[str, Any]:
    cause = {"type": type_, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class OpenSearchFailure(Exception):
    def __init__(self, status: int, type_: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.type, self.reason, self.extra = status, type_, reason, extra

    def response(self) -> web.Response:
        return web.json_response(
            error_body(self.status, self.type, self.reason, **self.extra), status=self.status
        )


def _index_missing(name: str) -> OpenSearchFailure:
    return OpenSearchFailure(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        index=name,
        **{"resource.type": "index_or_alias", "resource.id": name},
    )


@dataclass
class Index:
    name: str
    creation_ms: int
    uuid: str = field(default_factory=lambda: uuidlib.uuid4().hex[:22])
    docs: int = 0
    status: str = "open"
    hidden: bool = False
    health: str = "green"
    settings: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def write_blocked(self) -> bool:
        return self.settings.get("index.blocks.write") == "true"


@dataclass
class Snapshot:
    name: str
    uuid: str
    indices: list[str]
    start_ms: int
    state: str = "IN_PROGRESS"
    end_ms: int = 0
    outcome: str = "SUCCESS"
    """The state it ends in."""
    polls: int = 1
    """Reads of it before it ends (0: at the next read); ``held`` ones wait for ``finish``."""
    held: bool = False
    omit: list[str] = field(default_factory=list)
    """Indices the finished snapshot does not list (a snapshot that does not contain what was asked)."""
    failed_indices: list[str] = field(default_factory=list)
    captured: dict[str, int] = field(default_factory=dict)
    """Each index's document count when the snapshot started."""
    copied: dict[str, str] = field(default_factory=dict)
    """Index name -> the ``index.uuid`` of the index the snapshot copied under that name (never shown by
    the API: tests use it to tell which of two same-named indices a snapshot holds)."""

    def doc(self) -> dict[str, Any]:
        listed = [i for i in self.indices if self.state == "IN_PROGRESS" or i not in self.omit]
        total = len(listed)
        failed = 0
        failures: list[dict[str, Any]] = []
        if self.state == "PARTIAL":
            bad = self.failed_indices or listed[:1]
            failed = len(bad)
            failures = [
                {
                    "index": i,
                    "index_uuid": i,
                    "shard_id": 0,
                    "reason": "IndexShardSnapshotFailedException[...]",
                    "node_id": "node-1",
                    "status": "INTERNAL_SERVER_ERROR",
                }
                for i in bad
            ]
        elif self.state == "FAILED":
            failed = total
        out: dict[str, Any] = {
            "snapshot": self.name,
            "uuid": self.uuid,
            "version_id": VERSION_ID,
            "version": VERSION["number"],
            "remote_store_index_shallow_copy": False,
            "indices": listed,
            "data_streams": [],
            "include_global_state": False,
            "state": self.state,
            "start_time": _iso(self.start_ms),
            "start_time_in_millis": self.start_ms,
            "end_time": _iso(self.end_ms),
            "end_time_in_millis": self.end_ms,
            "duration_in_millis": max(0, self.end_ms - self.start_ms) if self.end_ms else 0,
            "failures": failures,
            "shards": {"total": total, "failed": failed, "successful": total - failed},
        }
        if self.state == "FAILED":
            out["reason"] = "Snapshot failed: a shard failed"
        return out


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


@dataclass
class Repository:
    name: str
    type: str = "s3"
    settings: dict[str, Any] = field(
        default_factory=lambda: {"bucket": "opensearch-logs", "client": "default"}
    )
    verify_error: str | None = None
    snapshots: dict[str, Snapshot] = field(default_factory=dict)


@dataclass
class Injected:
    status: int
    type: str
    reason: str
    times: int
    match: str
    retry_after: str | None


class FakeOpenSearch:
    """One single-node cluster. Start with ``await start()``; ``url`` then answers on 127.0.0.1."""

    def __init__(self, now_ms: Callable[[], int] | None = None) -> None:
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.indices: dict[str, Index] = {}
        self.data_streams: dict[str, list[str]] = {}
        self.repositories: dict[str, Repository] = {"opensearch-logs": Repository("opensearch-logs")}
        self.max_concurrent_operations = 1000
        self.users: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.forbidden: set[str] = set()
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.writes_refused = 0
        self._injected: list[Injected] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.outcomes: dict[str, dict[str, Any]] = {}
        """Snapshot name (or the start of one; the longest match wins) -> fields for snapshots created over
        HTTP (outcome, polls, held, omit, failed_indices)."""

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self, ssl_context: Any = None) -> FakeOpenSearch:
        """``ssl_context``: an ``ssl.SSLContext`` to serve https (the url then starts with https://)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- seeding and control ---------------------------------------------------------------------------

    def add_index(
        self,
        name: str,
        *,
        age_days: float = 0.0,
        docs: int = 10,
        blocked: bool = False,
        status: str = "open",
        aliases: dict[str, dict[str, Any]] | None = None,
    ) -> Index:
        idx = Index(
            name,
            self.now_ms() - int(age_days * 86_400_000),
            docs=docs,
            status=status,
            hidden=name.startswith("."),
            aliases=aliases or {},
        )
        if blocked:
            idx.settings["index.blocks.write"] = "true"
        self.indices[name] = idx
        return idx

    def delete_index(self, name: str) -> None:
        """The index is gone, as after ``DELETE /{name}`` (its uuid is never seen again)."""
        del self.indices[name]

    def add_data_stream(self, name: str, generations: int, *, age_days: float = 0.0) -> list[str]:
        """Backing indices ``.ds-<name>-00000N``, oldest first; the last is the write index."""
        backing = []
        for g in range(1, generations + 1):
            idx = self.add_index(
                f".ds-{name}-{g:06d}", age_days=age_days * (generations - g + 1) / generations
            )
            backing.append(idx.name)
        self.data_streams[name] = backing
        return backing

    def add_snapshot(
        self,
        name: str,
        indices: list[str],
        *,
        state: str = "SUCCESS",
        age_days: float = 0.0,
        repo: str = "opensearch-logs",
        failed_indices: list[str] | None = None,
    ) -> Snapshot:
        start = self.now_ms() - int(age_days * 86_400_000)
        snap = Snapshot(
            name,
            uuidlib.uuid4().hex[:22],
            list(indices),
            start,
            state=state,
            end_ms=start + 60_000 if state != "IN_PROGRESS" else 0,
            outcome=state,
            failed_indices=failed_indices or [],
            held=state == "IN_PROGRESS",
            captured={i: self.indices[i].docs for i in indices if i in self.indices},
            # An index created after the snapshot started is not what it copied: that was an earlier one.
            copied={
                i: self.indices[i].uuid
                for i in indices
                if i in self.indices and self.indices[i].creation_ms <= start
            },
        )
        self.repositories[repo].snapshots[name] = snap
        return snap

    def snapshot(self, name: str, repo: str = "opensearch-logs") -> Snapshot:
        return self.repositories[repo].snapshots[name]

    def finish(self, name: str, state: str = "SUCCESS", repo: str = "opensearch-logs") -> None:
        snap = self.snapshot(name, repo)
        snap.held, snap.outcome = False, state
        self._complete(snap)

    def set_state(self, name: str, state: str, repo: str = "opensearch-logs") -> None:
        """Change a finished snapshot's state (a snapshot replaced under the same name, a test of re-reads)."""
        self.snapshot(name, repo).state = state

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        match: str = "",
        type_: str | None = None,
        reason: str = "injected",
        retry_after: str | None = None,
    ) -> None:
        default = {429: "rejected_execution_exception", 503: "cluster_manager_not_discovered_exception"}
        self._injected.append(
            Injected(status, type_ or default.get(status, "exception"), reason, times, match, retry_after)
        )

    def write(self, index: str, n: int = 1) -> int:
        """Index ``n`` documents as a client would; the HTTP status it gets (201, 403 when blocked)."""
        idx = self.indices.get(index)
        if idx is None:
            return 404
        if idx.write_blocked:
            self.writes_refused += 1
            return 403
        idx.docs += n
        return 201

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _, _ in self.requests if method is None or m == method]

    # -- HTTP ------------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        if not self.users and not self.tokens:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[7:] in self.tokens
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return self.users.get(user) == password
        return False

    def _inject(self, method: str, path: str) -> web.Response | None:
        for inj in self._injected:
            if inj.times > 0 and inj.match in f"{method} {path}":
                inj.times -= 1
                headers = {"Retry-After": inj.retry_after} if inj.retry_after else {}
                return web.json_response(
                    error_body(inj.status, inj.type, inj.reason), status=inj.status, headers=headers
                )
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        path = "/" + request.match_info["tail"]
        self.requests.append((request.method, path, dict(request.query), body))
        if not self._authorized(request):
            return web.Response(
                status=401,
                text="Unauthorized",
                headers={"WWW-Authenticate": 'Basic realm="OpenSearch Security"'},
            )
        injected = self._inject(request.method, path)
        if injected is not None:
            return injected
        for op in self.forbidden:
            if op in f"{request.method} {path}":
                return web.json_response(
                    error_body(
                        403,
                        "security_exception",
                        f"no permissions for [{op}] and User [name=runbookd, backend_roles=[], requestedTenant=null]",
                    ),
                    status=403,
                )
        try:
            return await self._route(
                request.method, [p for p in path.split("/") if p], dict(request.query), body
            )
        except OpenSearchFailure as exc:
            return exc.response()

    async def _route(self, method: str, parts: list[str], q: dict[str, str], body: Any) -> web.StreamResponse:
        if not parts:
            return web.json_response(
                {
                    "name": "node-1",
                    "cluster_name": "logs",
                    "version": VERSION,
                    "tagline": "The OpenSearch Project: https://opensearch.org/",
                }
            )
        head = parts[0]
        if head == "_cat" and len(parts) >= 2 and parts[1] == "indices" and method == "GET":
            return self._cat_indices(parts[2] if len(parts) > 2 else "*", q)
        if head == "_snapshot" and len(parts) >= 2:
            return self._snapshot_api(method, parts[1:], q, body)
        if head == "_data_stream" and method == "GET":
            names = [n for n in self.data_streams if len(parts) < 2 or fnmatch.fnmatchcase(n, parts[1])]
            return web.json_response({"data_streams": [self._ds_doc(n) for n in names]})
        if head == "_alias" and method == "GET":
            return self._aliases(None, parts[1] if len(parts) > 1 else None)
        if not head.startswith("_"):
            return self._index_api(method, head, parts[1:], q, body)
        raise OpenSearchFailure(
            400, "illegal_argument_exception", f"no handler for [{method} /{'/'.join(parts)}]"
        )

    # -- indices ---------------------------------------------------------------------------------------

    def _resolve(self, expr: str, *, wildcards_only_open: bool = False) -> list[Index]:
        """An index expression (name or pattern, or a data stream name) -> concrete indices."""
        out: dict[str, Index] = {}
        for part in expr.split(","):
            if "*" in part:
                for name, idx in self.indices.items():
                    if fnmatch.fnmatchcase(name, part) and not (idx.hidden and not part.startswith(".")):
                        out[name] = idx
                for ds, backing in self.data_streams.items():
                    if fnmatch.fnmatchcase(ds, part):
                        out |= {b: self.indices[b] for b in backing if b in self.indices}
            elif part in self.indices:
                out[part] = self.indices[part]
            elif part in self.data_streams:
                out |= {b: self.indices[b] for b in self.data_streams[part] if b in self.indices}
            else:
                raise _index_missing(part)
        return list(out.values())

    def _cat_indices(self, expr: str, q: dict[str, str]) -> web.StreamResponse:
        rows = []
        for idx in self._resolve(expr):
            full = {
                "health": idx.health,
                "status": idx.status,
                "index": idx.name,
                "uuid": idx.uuid,
                "pri": "1",
                "rep": "0",
                "docs.count": str(idx.docs),
                "docs.deleted": "0",
                "store.size": str(idx.docs * 1000 + 208),
                "pri.store.size": str(idx.docs * 1000 + 208),
                "creation.date": str(idx.creation_ms),
                "creation.date.string": _iso(idx.creation_ms),
            }
            cols = q.get(
                "h", "health,status,index,uuid,pri,rep,docs.count,docs.deleted,store.size,pri.store.size"
            )
            rows.append({c: full.get(c) for c in cols.split(",")})
        if q.get("format") != "json":
            return web.Response(text="\n".join(" ".join(str(v) for v in r.values()) for r in rows) + "\n")
        return web.json_response(rows)

    def _index_api(
        self, method: str, expr: str, rest: list[str], q: dict[str, str], body: Any
    ) -> web.StreamResponse:
        if not rest and method == "DELETE":
            return self._delete_index(expr)
        if rest[:1] == ["_settings"]:
            targets = self._resolve(expr)
            if method == "GET":
                return web.json_response({i.name: {"settings": self._settings(i)} for i in targets})
            if method == "PUT":
                flat = _flatten(body or {})
                for i in targets:
                    for k, v in flat.items():
                        key = k if k.startswith("index.") else f"index.{k}"
                        if v is None:
                            i.settings.pop(key, None)
                        else:
                            i.settings[key] = str(v).lower() if isinstance(v, bool) else str(v)
                return web.json_response({"acknowledged": True})
        if rest[:1] == ["_alias"] and method == "GET":
            return self._aliases(expr, rest[1] if len(rest) > 1 else None)
        if rest[:1] == ["_doc"] and method in ("POST", "PUT"):
            idx = self.indices.get(expr)
            if idx is None:
                raise _index_missing(expr)
            if self.write(expr) == 403:
                raise OpenSearchFailure(
                    403,
                    "cluster_block_exception",
                    f"index [{expr}] blocked by: [FORBIDDEN/8/index write (api)];",
                )
            return web.json_response(
                {
                    "_index": expr,
                    "_id": str(next(_ids)),
                    "_version": 1,
                    "result": "created",
                    "_shards": {"total": 1, "successful": 1, "failed": 0},
                },
                status=201,
            )
        raise OpenSearchFailure(
            400, "illegal_argument_exception", f"no handler for [{method} /{expr}/{'/'.join(rest)}]"
        )

    def _settings(self, i: Index) -> dict[str, str]:
        return {
            "index.creation_date": str(i.creation_ms),
            "index.number_of_replicas": "0",
            "index.number_of_shards": "1",
            "index.provided_name": i.name,
            "index.uuid": i.uuid,
            "index.version.created": str(VERSION_ID),
            **i.settings,
        }

    def _delete_index(self, expr: str) -> web.StreamResponse:
        for ds in self.data_streams:
            if expr == ds:
                raise OpenSearchFailure(
                    400,
                    "illegal_argument_exception",
                    f"The provided expression [{expr}] matches a data stream, specify the "
                    "corresponding concrete indices instead.",
                )
        if any(expr in i.aliases for i in self.indices.values()):
            raise OpenSearchFailure(
                400,
                "illegal_argument_exception",
                f"The provided expression [{expr}] matches an alias, specify the corresponding "
                "concrete indices instead.",
            )
        targets = self._resolve(expr)  # wildcards expand (action.destructive_requires_name is false in 2.x)
        for ds, backing in self.data_streams.items():
            for t in targets:
                if backing and t.name == backing[-1]:
                    raise OpenSearchFailure(
                        400,
                        "illegal_argument_exception",
                        f"index [{t.name}] is the write index for data stream [{ds}] and cannot be deleted",
                    )
        running = {
            i
            for r in self.repositories.values()
            for s in r.snapshots.values()
            if s.state == "IN_PROGRESS"
            for i in s.indices
        }
        busy = [f"[{t.name}/{t.uuid}]" for t in targets if t.name in running]
        if busy:
            raise OpenSearchFailure(
                400,
                "snapshot_in_progress_exception",
                f"Cannot delete indices that are being snapshotted: [{', '.join(busy)}]. Try again "
                "after snapshot finishes or cancel the currently running snapshot.",
            )
        for t in targets:
            del self.indices[t.name]
            for backing in self.data_streams.values():
                if t.name in backing:
                    backing.remove(t.name)
        return web.json_response({"acknowledged": True})

    def _aliases(self, expr: str | None, alias: str | None) -> web.StreamResponse:
        targets = self._resolve(expr) if expr else list(self.indices.values())
        out = {}
        for i in targets:
            chosen = {a: p for a, p in i.aliases.items() if alias is None or fnmatch.fnmatchcase(a, alias)}
            if chosen or alias is None:
                out[i.name] = {"aliases": chosen}
        if alias is not None and not out:
            return web.json_response({"error": f"alias [{alias}] missing", "status": 404}, status=404)
        return web.json_response(out)

    def _ds_doc(self, name: str) -> dict[str, Any]:
        backing = self.data_streams[name]
        return {
            "name": name,
            "timestamp_field": {"name": "@timestamp"},
            "indices": [
                {"index_name": b, "index_uuid": self.indices[b].uuid} for b in backing if b in self.indices
            ],
            "generation": len(backing),
            "status": "GREEN",
            "template": f"{name}-template",
        }

    # -- snapshots -------------------------------------------------------------------------------------

    def _repo(self, name: str) -> Repository:
        repo = self.repositories.get(name)
        if repo is None:
            raise OpenSearchFailure(404, "repository_missing_exception", f"[{name}] missing")
        return repo

    def _complete(self, snap: Snapshot) -> None:
        snap.state = snap.outcome
        snap.end_ms = max(self.now_ms(), snap.start_ms + 1)

    def _tick(self, snap: Snapshot) -> None:
        """A read of a running snapshot: it ends after its ``polls`` reads unless held."""
        if snap.state != "IN_PROGRESS" or snap.held:
            return
        if snap.polls <= 0:
            self._complete(snap)
        else:
            snap.polls -= 1

    def _snapshot_api(
        self, method: str, parts: list[str], q: dict[str, str], body: Any
    ) -> web.StreamResponse:
        repo_name = parts[0]
        if len(parts) == 1:
            if method == "GET":
                repo = self._repo(repo_name)
                return web.json_response({repo.name: {"type": repo.type, "settings": repo.settings}})
            if method == "PUT":
                self.repositories[repo_name] = Repository(
                    repo_name, body.get("type", "fs"), body.get("settings", {})
                )
                return web.json_response({"acknowledged": True})
        repo = self._repo(repo_name)
        name = parts[1]
        if name == "_verify" and method == "POST":
            if repo.verify_error:
                raise OpenSearchFailure(
                    500, "repository_verification_exception", f"[{repo.name}] {repo.verify_error}"
                )
            return web.json_response({"nodes": {"bS2ik9gqTQGmQ6xsvuM-gQ": {"name": "node-1"}}})
        if method == "GET":
            return self._get_snapshots(repo, name, q)
        if method in ("PUT", "POST"):
            return self._create_snapshot(repo, name, q, body or {})
        if method == "DELETE":
            snap = repo.snapshots.pop(name, None)
            if snap is None:
                raise OpenSearchFailure(404, "snapshot_missing_exception", f"[{repo.name}:{name}] is missing")
            return web.json_response({"acknowledged": True})
        raise OpenSearchFailure(405, "method_not_allowed", f"{method} not allowed")

    def _get_snapshots(self, repo: Repository, names: str, q: dict[str, str]) -> web.StreamResponse:
        if names == "_current":
            for s in repo.snapshots.values():
                self._tick(s)
            found = [s for s in repo.snapshots.values() if s.state == "IN_PROGRESS"]
        elif names in ("_all", "*"):
            for s in repo.snapshots.values():
                self._tick(s)
            found = list(repo.snapshots.values())
        else:
            found = []
            for n in names.split(","):
                hits = [s for k, s in repo.snapshots.items() if fnmatch.fnmatchcase(k, n)]
                if not hits and "*" not in n and q.get("ignore_unavailable") != "true":
                    raise OpenSearchFailure(
                        404, "snapshot_missing_exception", f"[{repo.name}:{n}] is missing"
                    )
                for s in hits:
                    self._tick(s)
                found += hits
        found.sort(key=lambda s: (s.start_ms, s.name))
        return web.json_response({"snapshots": [s.doc() for s in found]})

    def _create_snapshot(
        self, repo: Repository, name: str, q: dict[str, str], body: dict[str, Any]
    ) -> web.StreamResponse:
        if name in repo.snapshots:
            raise OpenSearchFailure(
                400,
                "invalid_snapshot_name_exception",
                f"[{repo.name}:{name}] Invalid snapshot name [{name}], snapshot with the same name "
                "already exists",
            )
        running = sum(
            1 for r in self.repositories.values() for s in r.snapshots.values() if s.state == "IN_PROGRESS"
        )
        if running >= self.max_concurrent_operations:
            raise OpenSearchFailure(
                503,
                "concurrent_snapshot_execution_exception",
                f"[{repo.name}:{name}] Cannot start another operation, already running [{running}] "
                "operations and the current limit for concurrent snapshot operations is set to "
                f"[{self.max_concurrent_operations}]",
            )
        expr = body.get("indices", "*")
        expr = ",".join(expr) if isinstance(expr, list) else str(expr)
        try:
            targets = self._resolve(expr)
        except OpenSearchFailure:
            if body.get("ignore_unavailable"):
                targets = [self.indices[n] for n in expr.split(",") if n in self.indices]
            else:
                raise
        control = max(((k, v) for k, v in self.outcomes.items() if name.startswith(k)), default=("", {}))[1]
        snap = Snapshot(
            name,
            uuidlib.uuid4().hex[:22],
            [t.name for t in targets],
            self.now_ms(),
            captured={t.name: t.docs for t in targets},
            copied={t.name: t.uuid for t in targets},
            **control,
        )
        repo.snapshots[name] = snap
        if q.get("wait_for_completion") == "true":
            snap.held = False
            self._complete(snap)
            return web.json_response({"snapshot": snap.doc()})
        return web.json_response({"accepted": True})


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out
