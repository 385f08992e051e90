"""Longhorn in the Kubernetes API emulator: seeding helpers for volumes, backup targets and backups, with
their status fields as Longhorn's controllers set them (longhorn-manager k8s/pkg/apis/longhorn/v1beta2
backup.go, snapshot.go, backuptarget.go, volume.go), and a small controller that plays Longhorn's part
for objects runbookd creates:

- a Snapshot with ``spec.createSnapshot`` becomes ``status.readyToUse: true``;
- a Backup is checked as Longhorn's admission webhook and controller do (labels ``backup-volume`` and
  ``backup-target``, the snapshot exists and belongs to that volume, the target is available), then goes
  ``InProgress`` and ``Completed`` (with ``backupCreatedAt``, ``url``) a few polls later, or ``Error``;
- a Backup whose name is in ``stuck`` (or every new one with ``stick_new``) never leaves InProgress,
  like the backups of longhorn/longhorn#9417.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from daemon.kits.clock import Clock, iso

from .kube_api import KubeApiEmulator

NS = "longhorn-system"
API = "longhorn.io/v1beta2"
HOUR = 3600.0


@dataclass
class Longhorn:
    kube: KubeApiEmulator
    clock: Clock
    namespace: str = NS
    stuck: set[str] = field(default_factory=set)
    stick_new: bool = False
    fail_new: str | None = None
    """An error message for every new backup (Error state), e.g. the target refusing the upload."""
    _polls: dict[str, int] = field(default_factory=dict)

    # -- seeding -----------------------------------------------------------------------------------

    def _meta(self, name: str, created: float, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": iso(created),
            "labels": dict(labels or {}),
        }

    def target(
        self, name: str = "default", *, available: bool = True, url: str = "s3://longhorn-backups@us-east-1/"
    ) -> None:
        conditions = (
            []
            if available
            else [{"type": "Unavailable", "status": "True", "message": "cannot reach s3 endpoint"}]
        )
        self.kube.put(
            {
                "apiVersion": API,
                "kind": "BackupTarget",
                "metadata": self._meta(name, self.clock.now() - 100 * 86400),
                "spec": {"backupTargetURL": url, "credentialSecret": "minio-secret", "pollInterval": "5m0s"},
                "status": {"available": available, "conditions": conditions, "ownerID": "node-194"},
            }
        )

    def volume(self, name: str, pvc: str, namespace: str = "monitoring", *, target: str = "default") -> None:
        self.kube.put(
            {
                "apiVersion": API,
                "kind": "Volume",
                "metadata": self._meta(name, self.clock.now() - 200 * 86400),
                "spec": {"numberOfReplicas": 3, "size": "10737418240", "backupTargetName": target},
                "status": {
                    "state": "attached",
                    "robustness": "healthy",
                    "currentNodeID": "node-196",
                    "isStandby": False,
                    "kubernetesStatus": {"pvcName": pvc, "namespace": namespace, "pvStatus": "Bound"},
                },
            }
        )

    def backup(
        self,
        name: str,
        volume: str,
        *,
        hours_ago: float,
        state: str = "Completed",
        error: str = "",
        target: str = "default",
        synced: bool = False,
    ) -> None:
        """A backup requested ``hours_ago`` (and, if Completed, finished then), on backup ``target``. One
        seeded Pending or InProgress never leaves that state (the controller leaves it alone): a stuck
        backup. ``synced``: made by Longhorn from what it found in the backup store, no snapshot name
        (longhorn-manager backup_controller), state "" until Longhorn has read it."""
        at = self.clock.now() - hours_ago * HOUR
        if state in ("Pending", "InProgress"):
            self.stuck.add(name)
        status: dict[str, Any] = {
            "state": state,
            "volumeName": volume,
            "snapshotName": "" if synced else f"snap-{name}",
            "ownerID": "node-196",
        }
        if state == "Completed":
            status |= {
                "backupCreatedAt": iso(at),
                "snapshotCreatedAt": iso(at - 60),
                "url": f"s3://longhorn-backups@us-east-1/?backup={name}&volume={volume}",
                "size": "1073741824",
                "progress": 100,
            }
        elif state == "InProgress":
            status |= {"progress": 37, "snapshotCreatedAt": iso(at)}
        elif state == "Error":
            status["error"] = error or "failed to upload"
        self.kube.put(
            {
                "apiVersion": API,
                "kind": "Backup",
                "metadata": self._meta(name, at, {"backup-volume": volume, "backup-target": target}),
                "spec": {
                    "snapshotName": "" if synced else f"snap-{name}",
                    "labels": {},
                    "backupMode": "incremental",
                },
                "status": status,
            }
        )

    def seed(self, volumes: int = 3, *, last_backup_hours: float = 5.0, daily: int = 10) -> list[str]:
        """A healthy cluster: the default target available, ``volumes`` volumes each with a backup a day
        for ``daily`` days, the newest ``last_backup_hours`` ago. Returns the volume names."""
        self.target()
        names = []
        for i in range(volumes):
            vol = f"pvc-{i:04d}aaaa-0000-4000-8000-00000000000{i}"
            self.volume(vol, f"data-app-{i}")
            for d in range(daily):
                self.backup(
                    f"backup-{i}{d:02d}{uuid.uuid4().hex[:10]}", vol, hours_ago=last_backup_hours + 24 * d
                )
            names.append(vol)
        return names

    # -- reading back ------------------------------------------------------------------------------

    def backups(self, volume: str | None = None) -> dict[str, dict[str, Any]]:
        out = {}
        for (rkey, _ns, name), obj in self.kube.objects.items():
            if rkey == "longhorn.io/backups" and (
                volume is None or obj["metadata"]["labels"].get("backup-volume") == volume
            ):
                out[name] = obj
        return out

    # -- the controller ----------------------------------------------------------------------------

    def step(self) -> None:
        for (rkey, _ns, name), obj in list(self.kube.objects.items()):
            if (
                rkey == "longhorn.io/snapshots"
                and obj["spec"].get("createSnapshot")
                and not obj.get("status")
            ):
                obj["status"] = {
                    "readyToUse": True,
                    "creationTime": iso(self.clock.now()),
                    "userCreated": True,
                    "size": 4096,
                }
            elif rkey == "longhorn.io/backups":
                self._backup(name, obj)

    def _backup(self, name: str, obj: dict[str, Any]) -> None:
        status = obj.setdefault("status", {})
        state = status.get("state", "")
        if state in ("Completed", "Error"):
            return
        if state == "":
            problem = self._admission(obj)
            if problem:
                status.update(state="Error", error=problem)
                return
            status.update(
                state="InProgress", progress=0, volumeName=obj["metadata"]["labels"]["backup-volume"]
            )
            if self.stick_new:
                self.stuck.add(name)
            return
        if name in self.stuck:
            return
        self._polls[name] = self._polls.get(name, 0) + 1
        if self._polls[name] < 2:
            return
        if self.fail_new:
            status.update(state="Error", error=self.fail_new)
            return
        now = self.clock.now()
        status.update(
            state="Completed",
            progress=100,
            backupCreatedAt=iso(now),
            snapshotName=obj["spec"]["snapshotName"],
            url=f"s3://longhorn-backups@us-east-1/?backup={name}&volume={status['volumeName']}",
        )

    def _admission(self, obj: dict[str, Any]) -> str | None:
        labels = obj["metadata"].get("labels") or {}
        volume, target = labels.get("backup-volume"), labels.get("backup-target")
        if not target:
            return "missing backup target label on backup object"
        tgt = self.kube.objects.get(("longhorn.io/backuptargets", self.namespace, target))
        if tgt is None or not tgt["status"].get("available"):
            return f"backup target {target} is not available"
        snap = self.kube.objects.get(
            ("longhorn.io/snapshots", self.namespace, obj["spec"].get("snapshotName", ""))
        )
        if snap is None:
            return f"snapshot {obj['spec'].get('snapshotName')} is invalid"
        if snap["spec"]["volume"] != volume:
            return (
                f"snapshot volume name {snap['spec']['volume']} and label volume name {volume} does not match"
            )
        return None

    @contextlib.asynccontextmanager
    async def running(self, interval: float = 0.02) -> AsyncIterator[Longhorn]:
        async def loop() -> None:
            while True:
                self.step()
                await asyncio.sleep(interval)

        task = asyncio.create_task(loop(), name="longhorn-controller")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
