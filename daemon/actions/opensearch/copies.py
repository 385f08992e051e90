"""When a copy of an index under the same name is a copy of that very index.

A name is no identity. A daily index deleted after its snapshot comes back under the same name when a
late write lands (Fluent-bit flushing a backlog into ``logs-2025.06.01``): a new index, with a new
``index.uuid`` and one document. A snapshot of the original is no copy of it, and a later snapshot of it
is no copy of the original. Only what can be proven counts; anything else is not a copy, so the snapshot
is named as the last copy and the approver sees a possible loss (the safe side).

What OpenSearch tells (server source, see docs/opensearch.md):
- ``GET _snapshot/{repo}/{snap}`` lists index *names* only (SnapshotInfo ``indices`` is a list of
  strings); nothing in the snapshot API gives the uuid of a snapshotted index (Elasticsearch's later
  ``?index_details=true`` is not in OpenSearch, and has no uuid either).
- A snapshot resolves its index names and takes ``start_time_in_millis`` in one cluster-state update
  on the cluster manager (SnapshotsService.createSnapshot): it copies the indices that bear those names at
  its start time.
- ``index.uuid`` is new at every index creation and never reused. ``index.creation_date`` (``_cat/indices``
  ``creation.date``) is the time of creation, unless the create request or a template set it, and a
  restore from a snapshot copies the snapshotted index's settings, creation date included, under a new
  uuid (RestoreService).

The rule, for snapshot S listing index name N (``Evidence``):
1. runbookd took S and recorded the uuid U of N, read before S started and read again after (``copied``
   in its record): S copied U. A live index N is S's index iff its uuid is U. Another snapshot's N is S's
   index iff runbookd recorded it as copying U too. (A restore over an existing closed index keeps its
   uuid and replaces its documents: an operator's overwrite, which no uuid shows.)
2. runbookd read U before S started but did not confirm it after (a record from before confirmation):
   a live N with uuid U existed before S started and exists now, and a uuid never comes back, so it bore
   the name N when S started: it is S's index. Nothing else is proven.
3. No record of S naming N (a snapshot of ISM, of a person, or runbookd's from before it recorded every
   index's uuid): a live index L named N counts when its creation date is at least ``SKEW_MS`` before S
   started. The argument: L is one index (one uuid) from its creation until now, since a deleted index is
   never undeleted and a recreation is another index with its own uuid and a later creation date; so L
   existed all along from its creation date until now, which includes S's start; at S's start the name N
   belonged to exactly one index, so S copied L. Had N been deleted and recreated between L's creation
   date and S's start, L would not be live now, or its creation date would be the later one. The argument
   fails only when the creation date is not when L came to exist: L restored under the name N after S
   started (a restore keeps the snapshotted index's creation date, under a new uuid) or created with
   ``index.creation_date`` set by hand. Another snapshot's N is never proven to be S's index without
   records (rule 1).

A copy in another snapshot counts only when that snapshot is verified (SUCCESS, no failed shard, listing
the index) and started no earlier than S: an earlier copy of the same index lacks what was written after
it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from daemon.actions.base import ActionMemory
from daemon.actions.opensearch.common import Index, Snapshot, read_indices
from daemon.clients.opensearch import OpenSearchClient
from daemon.kits.clock import iso

MEMORY = "opensearch.snapshots"
"""ActionMemory namespace: "{repo}/{snapshot}" -> what runbookd noted when it took that snapshot
(opensearch.create_snapshot): ``indices``, ``write_blocked`` and ``index_uuids`` (index -> uuid, read
before the start), ``uuid`` (the snapshot's), ``copied`` (index -> uuid, read before the start and again
after)."""

SKEW_MS = 60_000
"""Creation dates and snapshot start times are stamped by the cluster manager of the moment, and two
cluster managers' clocks may differ: an index created less than a minute before a snapshot started is not
taken as the index it copied (rule 3)."""


def memory_key(repo: str, name: str) -> str:
    return f"{repo}/{name}"


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str) and v}


@dataclass(frozen=True)
class Record:
    """What runbookd noted when it took a snapshot: ``before`` (index -> uuid read before it started) and
    ``copied`` (the same, confirmed by a read after it started)."""

    snapshot_uuid: str
    before: dict[str, str]
    copied: dict[str, str]

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> Record | None:
        """None without the snapshot's uuid: the record could then be of another snapshot once of that
        name, and proves nothing about this one."""
        uuid = doc.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            return None
        before = {**_str_map(doc.get("write_blocked")), **_str_map(doc.get("index_uuids"))}
        return cls(uuid, before, _str_map(doc.get("copied")))


@dataclass(frozen=True)
class Evidence:
    """The live indices and runbookd's records, read once; decides which same-named copies are copies of
    the index a snapshot holds (the rule in the module docstring)."""

    live: dict[str, Index]
    records: dict[str, Record]
    """Snapshot name -> runbookd's record of it."""

    def record(self, s: Snapshot) -> Record | None:
        found = self.records.get(s.name)
        return found if found is not None and found.snapshot_uuid == s.uuid else None

    def live_doubt(self, s: Snapshot, index: str) -> str | None:
        """Why the live index of that name is not provably the one ``s`` copied; None when it is."""
        live = self.live.get(index)
        if live is None:
            return f"no live index {index}"
        rec = self.record(s)
        known = (rec.copied.get(index) or rec.before.get(index)) if rec is not None else None
        if known:
            if known == live.uuid:
                return None
            return (
                f"live index {index} (uuid {live.uuid}) is not the one runbookd recorded for {s.name} "
                f"({known})"
            )
        if live.created_ms > 0 and live.created_ms + SKEW_MS <= s.start_ms:
            return None
        created = iso(live.created_ms / 1000) if live.created_ms else "at an unknown time"
        return (
            f"live index {index} (uuid {live.uuid}) was created {created}, not before {s.name} started "
            f"({iso(s.start_ms / 1000)})"
        )

    def same_index(self, other: Snapshot, s: Snapshot, index: str) -> bool:
        """Whether runbookd recorded ``other`` and ``s`` as copying one index (rule 1)."""
        mine, theirs = self.record(s), self.record(other)
        if mine is None or theirs is None:
            return False
        uuid = mine.copied.get(index)
        return bool(uuid) and uuid == theirs.copied.get(index)

    def covers(self, other: Snapshot, s: Snapshot, index: str) -> bool:
        """Whether ``other`` holds a full copy of the index ``s`` holds under that name: verified, started
        no earlier, and provably the same index."""
        return _could_cover(other, s, index) and self.same_index(other, s, index)

    def doubts(self, s: Snapshot, index: str, others: list[Snapshot]) -> list[str]:
        """For the approver: the copies of that name that exist but were not counted, and why."""
        why = self.live_doubt(s, index) if index in self.live else None
        out = [why] if why is not None else []
        for o in sorted(others, key=lambda o: (o.start_ms, o.name)):
            if _could_cover(o, s, index) and not self.same_index(o, s, index):
                out.append(f"snapshot {o.name} lists {index}, but nothing proves it copied the same index")
        return out


def _could_cover(other: Snapshot, s: Snapshot, index: str) -> bool:
    """Another snapshot, a verified copy of something named ``index``, started no earlier than ``s``."""
    return other.name != s.name and other.why_not_copy_of(index) is None and other.start_ms >= s.start_ms


def by_name(indices: Iterable[Index]) -> dict[str, Index]:
    return {i.name: i for i in indices}


async def read_records(memory: ActionMemory, repo: str) -> dict[str, Record]:
    prefix = memory_key(repo, "")
    out: dict[str, Record] = {}
    for key, doc in (await memory.items(MEMORY)).items():
        if key.startswith(prefix) and isinstance(doc, dict):
            rec = Record.parse(doc)
            if rec is not None:
                out[key[len(prefix) :]] = rec
    return out


async def read_evidence(client: OpenSearchClient, memory: ActionMemory, repo: str) -> Evidence:
    """The live indices (name, uuid, creation date) and runbookd's records of the repository's snapshots,
    read now: the plan reads them once, the deletion again right before each snapshot it deletes."""
    return Evidence(by_name(await read_indices(client, "*")), await read_records(memory, repo))


def newest_copy(snapshots: list[Snapshot], index: Index, evidence: Evidence) -> Snapshot | None:
    """The newest snapshot that is a verified copy of this very index: SUCCESS, no failed shard, listing
    its name, and this index provably the one it copied (``Evidence.live_doubt``; ``evidence.live`` holds
    it). An older snapshot of an earlier index of that name is no copy of it."""
    found = [
        s
        for s in snapshots
        if s.why_not_copy_of(index.name) is None and evidence.live_doubt(s, index.name) is None
    ]
    return max(found, key=lambda s: (s.start_ms, s.name)) if found else None
