"""Thanos object storage actions: what is in the bucket, which blocks retention would retire, and marking
them for deletion.

Nothing here deletes an object. Retention marks blocks with the deletion-mark.json Thanos itself writes;
the compactor deletes them after its --delete-delay. Guards: a block is planned or marked only when its
meta.json says it is older than the retention of its resolution (re-read right before marking), never
when it is the newest block of its stream, never when it is a partial upload.
"""

from __future__ import annotations

from daemon.actions.thanos import retention, shipped, sidecar, status

ACTIONS = [*status.ACTIONS, *retention.ACTIONS, *shipped.ACTIONS, *sidecar.ACTIONS]

__all__ = ["ACTIONS"]
