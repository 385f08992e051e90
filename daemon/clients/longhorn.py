"""Longhorn's custom resources (``longhorn.io/v1beta2``) through runbookd's Kubernetes client.

The paths are the ones kubernetes-asyncio's ``CustomObjectsApi`` calls (``/apis/{group}/{version}/
namespaces/{ns}/{plural}[/{name}]``); going through ``KubernetesClient.request`` instead keeps one
timeout, retry and error policy for every Kubernetes call and returns the objects exactly as the API
server wrote them. Writes are ``WriteRequest``s, so a dry run shows exactly what would be sent.

Backups are created as Longhorn's own API does it (longhorn-manager ``manager.BackupSnapshot`` and
``datastore.CreateBackup``): a ``Backup`` whose ``spec.snapshotName`` names the volume's snapshot and
whose labels ``backup-volume`` and ``backup-target`` name the volume and its backup target (Longhorn's
admission webhook refuses a backup without them). Deleting a ``Backup`` object deletes the backup from
the backup store; that is the only way runbookd removes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from daemon.clients.kubernetes import KubernetesClient, WriteRequest

API = "/apis/longhorn.io/v1beta2"
LABEL_BACKUP_VOLUME = "backup-volume"
"""Label Longhorn puts on each Backup: the volume it is a backup of (types.LonghornLabelBackupVolume)."""
LABEL_BACKUP_TARGET = "backup-target"
"""Label naming the BackupTarget a Backup is stored in (types.LonghornLabelBackupTarget)."""
LABEL_VOLUME = "longhornvolume"
"""Label Longhorn puts on each Snapshot: its volume (types.LonghornLabelVolume)."""
DEFAULT_TARGET = "default"


def resource_path(namespace: str, plural: str, name: str | None = None) -> str:
    base = f"{API}/namespaces/{quote(namespace, safe='')}/{plural}"
    return base if name is None else f"{base}/{quote(name, safe='')}"


@dataclass
class LonghornClient:
    """Reads and described writes of Longhorn objects in one namespace (``kubernetes.longhorn_namespace``)."""

    kube: KubernetesClient

    @property
    def namespace(self) -> str:
        return self.kube.longhorn_namespace

    def path(self, plural: str, name: str | None = None) -> str:
        return resource_path(self.namespace, plural, name)

    # -- reads -----------------------------------------------------------------------------------

    async def volumes(self) -> list[dict[str, Any]]:
        return await self.kube.list_objects(self.path("volumes"))

    async def volume(self, name: str) -> dict[str, Any]:
        return await self.kube.get(self.path("volumes", name))

    async def backups(self, volume: str | None = None) -> list[dict[str, Any]]:
        """Every Backup, or a volume's (by its ``backup-volume`` label)."""
        selector = f"{LABEL_BACKUP_VOLUME}={volume}" if volume else None
        return await self.kube.list_objects(self.path("backups"), label_selector=selector)

    async def backup(self, name: str) -> dict[str, Any]:
        return await self.kube.get(self.path("backups", name))

    async def backup_targets(self) -> list[dict[str, Any]]:
        return await self.kube.list_objects(self.path("backuptargets"))

    async def snapshot(self, name: str) -> dict[str, Any]:
        return await self.kube.get(self.path("snapshots", name))

    # -- writes, described -----------------------------------------------------------------------

    def create_snapshot(self, name: str, volume: str, labels: dict[str, str]) -> WriteRequest:
        """A new snapshot of the volume, as ``kubectl create`` of a Snapshot with createSnapshot: true."""
        body = {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Snapshot",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {LABEL_VOLUME: volume}},
            "spec": {"volume": volume, "createSnapshot": True, "labels": labels},
        }
        return WriteRequest("POST", self.path("snapshots"), body)

    def create_backup(self, name: str, volume: str, snapshot: str, target: str) -> WriteRequest:
        body = {
            "apiVersion": "longhorn.io/v1beta2",
            "kind": "Backup",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {LABEL_BACKUP_VOLUME: volume, LABEL_BACKUP_TARGET: target},
            },
            "spec": {"snapshotName": snapshot, "labels": {}},
        }
        return WriteRequest("POST", self.path("backups"), body)

    def delete_backup(self, name: str, uid: str) -> WriteRequest:
        """Delete exactly the Backup that was checked: a UID precondition makes a re-created one a 409."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        return WriteRequest("DELETE", self.path("backups", name), body)
