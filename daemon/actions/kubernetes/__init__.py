"""Kubernetes actions: node status and health, cordon/uncordon/drain behind blast-radius guards,
pod and workload restarts, PVC status and expansion, and waits.

Every action validates names as DNS-1123 before any request, declares the RBAC permissions it uses
(``verb resource`` for the core group, ``verb group/resource`` otherwise, ``pods/eviction`` for the
subresource), reads for real in dry-run and returns the exact writes it would have sent instead.
"""

from __future__ import annotations

from daemon.actions.kubernetes import (
    drain,
    logs,
    nodes,
    outage,
    prometheus_retention,
    storage,
    waits,
    workloads,
)

ACTIONS = [*nodes.ACTIONS, *drain.ACTIONS, *workloads.ACTIONS, *storage.ACTIONS, *waits.ACTIONS]
ACTIONS += [*logs.ACTIONS, *outage.ACTIONS, *prometheus_retention.ACTIONS]

__all__ = ["ACTIONS"]
