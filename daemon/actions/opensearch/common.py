"""What the OpenSearch actions share: validated names, snapshots and indices as read from the API, and the
rules that decide whether a snapshot is a verified copy of an index and whether an index takes writes.

Names end up in URL paths, so they are held to a set of characters that needs no escaping, stricter than
OpenSearch's own rules: lowercase letters, digits, ``.``, ``_``, ``-``, ``+``, never starting with
``.``, ``_``, ``-`` or ``+`` (so no system or hidden index can be named by accident), no wildcard in an
exact name, no ``,`` (one name is one index), no ``_all``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from daemon.actions.base import Params
from daemon.clients.opensearch import OpenSearchClient, OpenSearchPermanentError
from daemon.kits.clock import iso

DAY_MS = 86_400_000
INDEX_COLUMNS = ("index", "uuid", "status", "health", "creation.date", "docs.count", "store.size")
NO_MATCH_HINT = "check the index naming: Fluent-bit's default prefix is `logstash-`"

# Permissions are the OpenSearch security plugin's action names (the role runbookd's user needs).
READ_INDICES = (
    "opensearch:indices:monitor/settings/get",
    "opensearch:indices:admin/aliases/get",
    "opensearch:indices:admin/data_stream/get",
    "opensearch:cluster:monitor/state",
)
READ_SNAPSHOTS = ("opensearch:cluster:admin/snapshot/get", "opensearch:cluster:admin/repository/get")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,199}$")
_INDEX = re.compile(r"^(\.ds-)?[a-z0-9][a-z0-9._+-]{0,199}$")
_BACKING = re.compile(r"^\.ds-(.+)-\d{6}$")
_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._+*-]{0,199}$")
_SNAPSHOT_PATTERN = re.compile(r"^[a-z0-9*][a-z0-9._+*-]{0,199}$")
_TEMPLATE = re.compile(r"^[a-z0-9][a-z0-9._{}-]{0,150}$")


def _name(what: str, pattern: re.Pattern[str]) -> AfterValidator:
    def check(v: str) -> str:
        if not pattern.fullmatch(v) or v in ("_all", "_current"):
            shown = v if len(v) <= 64 else v[:61] + "..."
            raise ValueError(
                f"{shown!r} is not a valid {what} (lowercase a-z, 0-9, '.', '_', '-', '+'"
                + (", '*'" if "*" in pattern.pattern else "")
                + "; starting with a letter or digit; at most 200 chars)"
            )
        return v

    return AfterValidator(check)


IndexName = Annotated[str, _name("index name", _INDEX)]
"""One concrete index: never a wildcard, a list or a hidden/system index (a data stream's ``.ds-``
backing indices excepted)."""
IndexPattern = Annotated[str, _name("index pattern", _PATTERN)]
"""One index pattern with ``*`` wildcards, e.g. ``logs-*``."""


def _each_once(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("an index is listed more than once")
    return v


ExactIndices = Annotated[list[IndexName], Field(min_length=1, max_length=1000), AfterValidator(_each_once)]
"""The exact indices a mutating step acts on: at least one, each named once."""
RepositoryName = Annotated[str, _name("snapshot repository name", _NAME)]
SnapshotName = Annotated[str, _name("snapshot name", _NAME)]
SnapshotPattern = Annotated[str, _name("snapshot name pattern", _SNAPSHOT_PATTERN)]
KeepDays = Annotated[int, Field(ge=1, le=3650)]
"""Whole days; 0 would mean "everything", which no retention here may mean."""


def _template(v: str) -> str:
    rest = v.replace("{date}", "").replace("{time}", "")
    if not _TEMPLATE.fullmatch(v) or "{" in rest or "}" in rest:
        raise ValueError(
            f"{v[:64]!r} is not a valid snapshot name template (lowercase a-z, 0-9, '.', '_', '-', and the "
            "placeholders {date} (YYYY.MM.DD, UTC) and {time} (HHMMSS, UTC))"
        )
    return v


SnapshotTemplate = Annotated[str, AfterValidator(_template)]


class RepositoryParams(Params):
    repository: RepositoryName = "opensearch-logs"


# -- snapshots -------------------------------------------------------------------------------------------


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as ``GET _snapshot/{repo}/{name}`` describes it."""

    name: str
    uuid: str
    state: str
    indices: tuple[str, ...]
    start_ms: int
    end_ms: int
    shards_total: int
    shards_failed: int
    failures: tuple[dict[str, Any], ...]
    reason: str | None = None

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> Snapshot:
        shards = doc.get("shards") if isinstance(doc.get("shards"), dict) else {}
        assert isinstance(shards, dict)
        failures = [f for f in doc.get("failures") or [] if isinstance(f, dict)]
        return cls(
            name=str(doc.get("snapshot") or ""),
            uuid=str(doc.get("uuid") or ""),
            state=str(doc.get("state") or "UNKNOWN"),
            indices=tuple(str(i) for i in doc.get("indices") or []),
            start_ms=_int(doc.get("start_time_in_millis")),
            end_ms=_int(doc.get("end_time_in_millis")),
            shards_total=_int(shards.get("total")),
            shards_failed=_int(shards.get("failed")),
            failures=tuple(failures),
            reason=str(doc["reason"]) if doc.get("reason") else None,
        )

    @cached_property
    def index_set(self) -> frozenset[str]:
        return frozenset(self.indices)

    @property
    def verified(self) -> bool:
        """SUCCESS with no failed shard at all: a full copy of every index it lists."""
        return self.state == "SUCCESS" and not self.shards_failed and not self.failures

    def failed_indices(self) -> set[str]:
        return {str(f.get("index")) for f in self.failures if f.get("index")}

    def why_not_copy_of(self, index: str) -> str | None:
        """Why this snapshot is not a verified copy of ``index``; None when it is: state SUCCESS, no failed
        shard at all, and the index in its list (ISM's PARTIAL-as-success and ES's "contains" gap)."""
        if self.state != "SUCCESS":
            return f"snapshot {self.name} is {self.state}, not SUCCESS"
        if self.shards_failed or self.failures:
            return f"snapshot {self.name} has {self.shards_failed or len(self.failures)} failed shard(s)"
        if index not in self.index_set:
            return f"snapshot {self.name} does not list index {index}"
        return None

    def view(self, max_failures: int = 5) -> dict[str, Any]:
        return {
            "snapshot": self.name,
            "uuid": self.uuid,
            "state": self.state,
            "indices": len(self.indices),
            "start": iso(self.start_ms / 1000) if self.start_ms else None,
            "end": iso(self.end_ms / 1000) if self.end_ms else None,
            "shards": {"total": self.shards_total, "failed": self.shards_failed},
            "failures": [
                {k: f.get(k) for k in ("index", "shard_id", "reason", "status") if k in f}
                for f in self.failures[:max_failures]
            ],
            **({"reason": self.reason} if self.reason else {}),
        }


async def read_snapshots(client: OpenSearchClient, repo: str) -> list[Snapshot]:
    return [Snapshot.parse(d) for d in await client.get_snapshots(repo, "_all")]


# -- indices ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    name: str
    uuid: str
    status: str
    created_ms: int
    docs: int
    bytes: int
    health: str = ""
    """green, yellow or red (``_cat/indices``): red when a primary shard is unassigned."""

    @classmethod
    def parse(cls, row: dict[str, str]) -> Index:
        return cls(
            name=row.get("index", ""),
            uuid=row.get("uuid", ""),
            status=row.get("status", ""),
            created_ms=_int(row.get("creation.date")),
            docs=_int(row.get("docs.count")),
            bytes=_int(row.get("store.size")),
            health=row.get("health", ""),
        )

    def age_days(self, now: float) -> float:
        return (now * 1000 - self.created_ms) / DAY_MS

    def view(self, now: float) -> dict[str, Any]:
        return {
            "index": self.name,
            "created": iso(self.created_ms / 1000),
            "age_days": round(self.age_days(now), 1),
            "status": self.status,
            "docs": self.docs,
            "bytes": self.bytes,
        }


async def read_indices(client: OpenSearchClient, pattern: str) -> list[Index]:
    """Indices matching the pattern, oldest first."""
    rows = await client.cat_indices(pattern, INDEX_COLUMNS)
    return sorted((Index.parse(r) for r in rows if r.get("index")), key=lambda i: (i.created_ms, i.name))


async def read_index(client: OpenSearchClient, name: str) -> Index | None:
    """The index of exactly this name now (an alias or data stream of that name does not count)."""
    try:
        rows = await client.cat_indices(name, INDEX_COLUMNS)
    except OpenSearchPermanentError as exc:
        if exc.kind == "not_found":
            return None
        raise
    found = [Index.parse(r) for r in rows if r.get("index") == name]
    return found[0] if found else None


def no_match_message(pattern: str) -> str:
    return f"`{pattern}` matches nothing: {NO_MATCH_HINT}"


@dataclass
class WriteTargets:
    """Indices that take writes now: a data stream's current backing index, an alias's write index."""

    reasons: dict[str, str] = field(default_factory=dict)

    def why(self, index: str) -> str | None:
        return self.reasons.get(index)


async def write_targets(client: OpenSearchClient) -> WriteTargets:
    """Read data streams and aliases now. An alias's write index is the one marked ``is_write_index``, or
    its only index when none is marked (OpenSearch writes there)."""
    out = WriteTargets()
    for ds in await client.data_streams():
        backing = [i.get("index_name") for i in ds.get("indices") or [] if isinstance(i, dict)]
        if backing and backing[-1]:
            out.reasons[str(backing[-1])] = f"current backing (write) index of data stream {ds.get('name')}"
    members: dict[str, list[tuple[str, Any]]] = {}
    for index, aliases in (await client.aliases()).items():
        for alias, props in aliases.items():
            flag = props.get("is_write_index") if isinstance(props, dict) else None
            members.setdefault(alias, []).append((index, flag))
    for alias, entries in members.items():
        marked = [i for i, flag in entries if flag is True]
        if marked:
            for i in marked:
                out.reasons.setdefault(i, f"write index of alias {alias}")
        elif len(entries) == 1 and entries[0][1] is not False:
            out.reasons.setdefault(entries[0][0], f"only index (so the write index) of alias {alias}")
    return out


def matches(pattern: str, name: str) -> bool:
    """Whether the pattern names this index, as OpenSearch resolves it: by its own name, or by the name of
    the data stream a ``.ds-<stream>-NNNNNN`` backing index belongs to."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    backing = _BACKING.match(name)
    return backing is not None and fnmatch.fnmatchcase(backing.group(1), pattern)
