"""OpenSearch snapshot and retention actions.

Read-only: opensearch.snapshot_status, opensearch.repository_check, opensearch.plan_index_retention,
opensearch.plan_snapshot_retention, opensearch.retention_check. Mutating: opensearch.block_writes (undo:
opensearch.unblock_writes), opensearch.create_snapshot, opensearch.delete_indices,
opensearch.delete_snapshots. Their guards are re-checked inside each action right before it acts; see each
module's docstring.
"""

from __future__ import annotations

from daemon.actions.opensearch import blocks, indices, plans, snapshots, status

ACTIONS = [*status.ACTIONS, *plans.ACTIONS, *blocks.ACTIONS, *snapshots.ACTIONS, *indices.ACTIONS]

__all__ = ["ACTIONS"]
