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
  its start time. Not so a clone (``PUT _snapshot/{repo}/{src}/_clone/{dst}``, also how a snapshot is
  renamed; SnapshotsService.cloneSnapshot): its start time is the cloning's, its indices the source's,
  and no snapshot API answer tells a clone from a snapshot.
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
3. No record of S naming N (a snapshot of ISM, of a person, a clone, or runbookd's from before it
   recorded every index's uuid): the live index N never counts as another copy when deleting S is
   decided. For reporting only (whether a live index has a snapshot: ``newest_copy``), a live index L
   named N counts when its creation date is at least ``SKEW_MS`` before S started. The argument: L is one index (one uuid) from its creation until now, since a deleted index is
   never undeleted and a recreation is another index with its own uuid and a later creation date; so L
   existed all along from its creation date until now, which includes S's start; at S's start the name N
   belonged to exactly one index, so S copied L. Had N been deleted and recreated between L's creation
   date and S's start, L would not be live now, or its creation date would be the later one. The argument
   fails only when the creation date is not when L came to exist: L restored under the name N after S
   started (a restore keeps the snapshotted index's creation date, under a new uuid) or created with
   ``index.creation_date`` set by hand, or S a clone whose source snapshot started before L existed:
   harmless in a report, which is why the rule never decides a deletion. Another snapshot's N is never
   proven to be S's index without records (rule 1).

A live index counts as another copy for a deletion only when its health is green or yellow: a red index
has a primary shard unassigned, and the snapshot may be the only copy of that shard's documents.

A copy in another snapshot counts only when that snapshot is verified (SUCCESS, no failed shard, listing
the index) and started no earlier than S: an earlier copy of the same index lacks what was written after
it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Sequence
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

HEALTHY = frozenset({"green", "yellow"})
"""``_cat/indices`` health of an index whose primary shards are all assigned (yellow: a replica is not)."""

MAX_NAMED = 3
"""Same-named later snapshots named one by one in ``unproven_copies``; the rest are counted."""

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

    def live_doubt(self, s: Snapshot, index: str, *, for_deletion: bool = True) -> str | None:
        """Why the live index of that name is not provably the one ``s`` copied; None when it is.

        ``for_deletion`` (whether deleting ``s`` may count on the live index as another copy): only
        runbookd's records prove it (rules 1 and 2), and only for an index whose primaries are all
        assigned. The creation date (rule 3) tells whether an index has a snapshot, never whether a
        snapshot may go: a clone (``_clone``, also how a snapshot is renamed) has the start time of the
        cloning and the indices of its source, so an index recreated under the old name after the source
        snapshot looks older than the clone."""
        live = self.live.get(index)
        if live is None:
            return f"no live index {index}"
        if for_deletion and live.health not in HEALTHY:
            return (
                f"live index {index} is {live.health or 'of unknown health'}: a primary shard is "
                "unassigned, so it is no full copy"
            )
        rec = self.record(s)
        known = (rec.copied.get(index) or rec.before.get(index)) if rec is not None else None
        if known:
            if known == live.uuid:
                return None
            return (
                f"live index {index} (uuid {live.uuid}) is not the one runbookd recorded for {s.name} "
                f"({known})"
            )
        created = iso(live.created_ms / 1000) if live.created_ms else "at an unknown time"
        if for_deletion:
            return (
                f"live index {index} (uuid {live.uuid}, created {created}) is not proven to be the one "
                f"{s.name} copied: runbookd has no record of that snapshot (ISM's, a person's, or a clone)"
            )
        if live.created_ms > 0 and live.created_ms + SKEW_MS <= s.start_ms:
            return None
        return (
            f"live index {index} (uuid {live.uuid}) was created {created}, not before {s.name} started "
            f"({iso(s.start_ms / 1000)})"
        )

    def doubts(
        self,
        s: Snapshot,
        index: str,
        later: Sequence[Snapshot],
        stays: Callable[[Snapshot], bool],
        same: Collection[str],
    ) -> list[str]:
        """For the approver: the copies of that name that exist but were not counted, and why. ``later``:
        the verified snapshots listing that name that started no earlier than ``s``, in start order, ``s``
        among them when it is one (``Holders.later``); ``stays``: whether one is still there when ``s``
        goes; ``same``: the names of those recorded as copying the very index ``s`` copied
        (``Holders.same_index``). The first few are named and the rest counted, without reading them:
        hourly snapshots of one long-lived index make thousands, for each planned snapshot."""
        why = self.live_doubt(s, index) if index in self.live else None
        out = [why] if why is not None else []
        mine = s.verified and index in s.index_set  # ``s`` itself is in ``later``, not yet passed
        seen = 0
        for o in later:
            if len(out) - (why is not None) == MAX_NAMED:
                break
            seen += 1
            if o.name == s.name:
                mine = False
            elif stays(o) and o.name not in same:
                out.append(f"snapshot {o.name} lists {index}, but nothing proves it copied the same index")
        more = len(later) - seen - mine
        if more > 0:
            out.append(f"{more} later snapshot(s) list {index} too, none proven to copy it")
        return out


@dataclass(frozen=True)
class Holders:
    """The verified snapshots (SUCCESS, no failed shard) by each index name they list, in start order,
    and by the uuid runbookd recorded them copying: what a plan over thousands of snapshots looks up
    instead of scanning every snapshot for every index of every planned one."""

    by_name: dict[str, list[Snapshot]]
    starts: dict[str, list[int]]
    by_uuid: dict[tuple[str, str], list[Snapshot]]

    @classmethod
    def of(cls, snapshots: Iterable[Snapshot], evidence: Evidence) -> Holders:
        by_name: dict[str, list[Snapshot]] = {}
        by_uuid: dict[tuple[str, str], list[Snapshot]] = {}
        for o in sorted(snapshots, key=lambda o: (o.start_ms, o.name)):
            if not o.verified:
                continue
            for i in o.index_set:
                by_name.setdefault(i, []).append(o)
            rec = evidence.record(o)
            for i, uuid in rec.copied.items() if rec is not None else ():
                if i in o.index_set:
                    by_uuid.setdefault((i, uuid), []).append(o)
        return cls(by_name, {i: [o.start_ms for o in os_] for i, os_ in by_name.items()}, by_uuid)

    def later(self, index: str, s: Snapshot) -> Sequence[Snapshot]:
        """The verified snapshots listing ``index`` that started no earlier than ``s`` (``s`` among them
        when it is one), in start order."""
        found = self.by_name.get(index, [])
        return found[bisect.bisect_left(self.starts.get(index, []), s.start_ms) :]

    def same_index(self, index: str, s: Snapshot, evidence: Evidence) -> list[Snapshot]:
        """The verified snapshots runbookd recorded copying the very index ``s`` copied under that name,
        started no earlier than ``s`` (rule 1); [] when runbookd has no such record of ``s``."""
        rec = evidence.record(s)
        uuid = rec.copied.get(index) if rec is not None else None
        if not uuid:
            return []
        return [
            o for o in self.by_uuid.get((index, uuid), []) if o.name != s.name and o.start_ms >= s.start_ms
        ]


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
        if s.why_not_copy_of(index.name) is None
        and evidence.live_doubt(s, index.name, for_deletion=False) is None
    ]
    return max(found, key=lambda s: (s.start_ms, s.name)) if found else None
