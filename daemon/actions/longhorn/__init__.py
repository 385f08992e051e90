"""Longhorn actions (``longhorn.io/v1beta2`` custom resources in ``kubernetes.longhorn_namespace``):
backup status and the retention plan (read-only); taking a backup, deleting backups by the retention
rules and clearing a stuck backup (mutating). RBAC is declared per action, as for ``kubernetes.*``."""

from __future__ import annotations

from daemon.actions.longhorn import backups, status

ACTIONS = [*status.ACTIONS, *backups.ACTIONS]

__all__ = ["ACTIONS"]
