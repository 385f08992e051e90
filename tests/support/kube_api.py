"""A Kubernetes API emulator for tests: an aiohttp server on loopback holding objects in memory.

Why our own and not kmock's KubernetesEmulator (kmock 0.8, checked): kmock stores objects and serves
get/list/create/patch/delete, but ignores fieldSelector and labelSelector on lists, never bumps or
checks resourceVersion (no 409 on a stale update), has no 422 validation, merges every patch the same
way whatever its content type, and treats ``POST .../pods/{name}/eviction`` as creating an object
instead of evicting the pod, so there is no 429 from a PodDisruptionBudget. Those are exactly the
semantics runbookd's node and storage actions depend on.

What this emulator answers as the real API server does (for the resources it knows):

- ``Status`` objects for errors: 400 BadRequest, 403 Forbidden (PVC resize admission), 404 NotFound,
  409 Conflict (stale ``metadata.resourceVersion`` in a patch or update, UID/resourceVersion
  preconditions on delete, AlreadyExists), 415 UnsupportedMediaType, 422 Invalid.
- Patches by content type: ``application/merge-patch+json`` (RFC 7386),
  ``application/strategic-merge-patch+json`` (maps merge, ``null`` deletes; lists merge by their
  patchMergeKey for the few fields listed in ``_MERGE_KEYS``, otherwise replaced, as for fields with
  no patch strategy), ``application/json-patch+json`` (RFC 6902 add/remove/replace/test).
- Lists with ``fieldSelector`` (``=``, ``==``, ``!=``; the fields the API server supports for pods,
  nodes and the generic metadata ones; anything else is a 400) and ``labelSelector`` (equality,
  ``in``/``notin``, existence).
- The eviction subresource: the pod is deleted (or left terminating for a few reads); 429
  TooManyRequests with a DisruptionBudget cause while a configured PodDisruptionBudget blocks it;
  404 when the pod is gone; 400 when the Eviction names another pod.
- PVC expansion as the admission plugin and validation do it: 403 unless the StorageClass allows
  expansion, 422 for a shrink; then ``Resizing`` until a configurable number of reads has passed.
- ``metadata.managedFields`` for updates and patches (operation ``Update``), as the API server keeps them:
  the request's ``fieldManager`` (else its User-Agent up to the first ``/``) owns every field the request
  changed or added, taken from other managers; a field removed is owned by nobody; a manager left with no
  field is dropped. Maps are tracked field by field, a list as one field (the real server tracks
  associative lists by key; nothing here needs that). Objects put by a test have none.
- The pod log subresource (``GET .../pods/{name}/log``, plain text): ``container`` (400 when a pod
  with several containers is asked without one), ``tailLines``, ``sinceSeconds``, ``limitBytes``;
  lines are seeded with ``set_logs``. Nodes report ``status.allocatable`` (4 cpu, 16Gi, 110 pods).

Every request is recorded (``.requests``) so tests assert exactly what was, and was not, sent.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
Key = tuple[str, str | None, str]
"""(resource key such as ``pods`` or ``apps/deployments``, namespace or None, name)."""


@dataclass(frozen=True)
class Resource:
    api: str
    """``v1`` for the core group, else ``group/version``."""
    plural: str
    kind: str
    namespaced: bool
    field_labels: tuple[str, ...] = ("metadata.name", "metadata.namespace")

    @property
    def key(self) -> str:
        group = self.api.rpartition("/")[0]
        return f"{group}/{self.plural}" if group else self.plural


_POD_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
RESOURCES = [
    Resource("v1", "nodes", "Node", False, ("metadata.name", "spec.unschedulable")),
    Resource("v1", "pods", "Pod", True, _POD_FIELDS),
    Resource("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    Resource("v1", "namespaces", "Namespace", False),
    Resource("storage.k8s.io/v1", "storageclasses", "StorageClass", False),
    Resource("apps/v1", "deployments", "Deployment", True),
    Resource("apps/v1", "statefulsets", "StatefulSet", True),
    Resource("apps/v1", "daemonsets", "DaemonSet", True),
    Resource("apps/v1", "replicasets", "ReplicaSet", True),
    Resource("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    Resource("v1", "secrets", "Secret", True),
    Resource("v1", "configmaps", "ConfigMap", True),
    Resource("coordination.k8s.io/v1", "leases", "Lease", True),
    # Prometheus Operator
    Resource("monitoring.coreos.com/v1", "prometheuses", "Prometheus", True),
    # Longhorn (longhorn.io/v1beta2, all in longhorn-system)
    Resource("longhorn.io/v1beta2", "volumes", "Volume", True),
    Resource("longhorn.io/v1beta2", "nodes", "Node", True),
    Resource("longhorn.io/v1beta2", "replicas", "Replica", True),
    Resource("longhorn.io/v1beta2", "instancemanagers", "InstanceManager", True),
    Resource("longhorn.io/v1beta2", "settings", "Setting", True),
    Resource("longhorn.io/v1beta2", "snapshots", "Snapshot", True),
    Resource("longhorn.io/v1beta2", "backups", "Backup", True),
    Resource("longhorn.io/v1beta2", "backupvolumes", "BackupVolume", True),
    Resource("longhorn.io/v1beta2", "backuptargets", "BackupTarget", True),
    Resource("longhorn.io/v1beta2", "recurringjobs", "RecurringJob", True),
]
_BY_PATH = {(r.api, r.plural): r for r in RESOURCES}
_BY_API_KIND = {(r.api, r.kind): r for r in RESOURCES}
_BY_KIND: dict[str, Resource] = {}
for _r in RESOURCES:
    _BY_KIND.setdefault(_r.kind, _r)  # a bare kind means the first listed: core Node before Longhorn's


def resource_for(kind: str, api: str | None = None) -> Resource:
    """The resource of a kind: ``Node`` (core), or qualified as ``longhorn.io/v1beta2/Node`` or by ``api``."""
    if api is None and "/" in kind:
        api, _, kind = kind.rpartition("/")
    return _BY_API_KIND[(api, kind)] if api is not None else _BY_KIND[kind]


_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "conditions": "type",
    "ownerReferences": "uid",
}
"""Strategic-merge-patch list fields that merge by key (a subset of the real patchMergeKeys)."""

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    authorization: str | None = None

    @property
    def verb(self) -> str:
        """The RBAC verb this request needs (``list`` for a collection GET)."""
        route = _parse_path(self.path)
        if self.method == "GET":
            return "get" if route is not None and route.name else "list"
        return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[self.method]

    @property
    def rbac_resource(self) -> str:
        """``pods``, ``pods/eviction``, ``apps/deployments``: the form actions declare permissions in."""
        route = _parse_path(self.path)
        if route is None:
            return "?"
        return route.resource.key + (f"/{route.subresource}" if route.subresource else "")

    @property
    def permission(self) -> str:
        return f"{self.verb} {self.rbac_resource}"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def response(self) -> web.Response:
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return web.json_response(status, status=self.code)


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource.key.rpartition("/")[2]} "{name}" not found',
        {"name": name, "kind": resource.plural, **_group(resource)},
    )


def conflict(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "kind": resource.plural, **_group(resource)},
    )


def invalid(resource: Resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    return ApiError(
        422,
        "Invalid",
        f'{resource.kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "kind": resource.kind,
            **_group(resource),
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        },
    )


def _group(resource: Resource) -> Obj:
    group = resource.api.rpartition("/")[0]
    return {"group": group} if group else {}


def _qualified(resource: Resource) -> str:
    group = resource.api.rpartition("/")[0]
    return f"{resource.plural}.{group}" if group else resource.plural


@dataclass(frozen=True)
class Route:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse_path(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        api, rest = parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        api, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    resource = _BY_PATH.get((api, rest[0]))
    if resource is None:
        return None
    if (namespace is not None and not resource.namespaced) or (
        namespace is None and resource.namespaced and len(rest) > 1
    ):
        return None
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    return Route(resource, namespace, name, sub)


# -- patches -------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any, field_name: str = "") -> Any:
    if isinstance(patch, list):
        key = _MERGE_KEYS.get(field_name)
        if key is None or not isinstance(target, list):
            return copy.deepcopy(patch)
        merged = copy.deepcopy(target)
        for item in patch:
            at = next(
                (i for i, t in enumerate(merged) if isinstance(item, dict) and t.get(key) == item.get(key)),
                None,
            )
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = strategic_merge_patch(merged[at], item)
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if any(k.startswith("$") for k in patch):
        raise ValueError("patch directives ($patch, $retainKeys, ...) are not supported by the emulator")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), v, k)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


_UNMANAGED = {("metadata", "managedFields"), ("metadata", "resourceVersion"), ("metadata", "generation")}
"""Fields the API server keeps itself: nobody owns them."""
_NONE = object()


def _leaves(obj: Any, at: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Each field of an object by its path: maps walked, anything else (lists too) one field."""
    if not isinstance(obj, dict) or (at and not obj):
        return {} if at in _UNMANAGED else {at: obj}
    out: dict[tuple[str, ...], Any] = {}
    for k, v in obj.items():
        if (*at, k) not in _UNMANAGED and not (not at and k in ("kind", "apiVersion")):
            out.update(_leaves(v, (*at, k)))
    return out


def _fields_v1(paths: set[tuple[str, ...]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def _paths_of(fields: dict[str, Any], at: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not fields:
        return {at} if at else set()
    return {p for k, v in fields.items() for p in _paths_of(v, (*at, k.removeprefix("f:")))}


def managed_fields(current: Obj, new: Obj, manager: str, api_version: str) -> list[Obj]:
    """``new``'s managedFields after ``manager`` updated ``current`` to it (operation Update)."""
    before, after = _leaves(current), _leaves(new)
    changed = {p for p, v in after.items() if before.get(p, _NONE) != v}
    gone = set(before) - set(after)
    entries: list[Obj] = []
    mine: set[tuple[str, ...]] = set()
    for entry in (current.get("metadata") or {}).get("managedFields") or []:
        owned = _paths_of(entry.get("fieldsV1") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Update":
            mine |= owned - gone
            continue
        kept = owned - changed - gone
        if kept:
            entries.append({**entry, "fieldsV1": _fields_v1(kept)})
    mine |= changed
    if mine:
        entries.append(
            {
                "manager": manager,
                "operation": "Update",
                "apiVersion": api_version,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(mine),
            }
        )
    return entries


def json_patch(target: Obj, ops: list[Any]) -> Obj:
    """RFC 6902 add/remove/replace/test, enough for resourceVersion-guarded edits."""
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise ValueError("each operation needs op and path")
        *parents, last = _pointer(op["path"]) or [""]
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        kind = op.get("op")
        if kind == "test":
            current = node[int(last)] if isinstance(node, list) else node.get(last)
            if current != op.get("value"):
                raise ValueError(f"test operation failed at {op['path']}")
        elif kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif kind in ("add", "replace"):
            if isinstance(node, list):
                idx = len(node) if last == "-" else int(last)
                if kind == "add":
                    node.insert(idx, op.get("value"))
                else:
                    node[idx] = op.get("value")
            else:
                if kind == "replace" and last not in node:
                    raise ValueError(f"replace of missing {op['path']}")
                node[last] = op.get("value")
        else:
            raise ValueError(f"unsupported op {kind!r}")
    return doc


# -- selectors -----------------------------------------------------------------------------------


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def field_matcher(resource: Resource, selector: str) -> list[tuple[str, bool, str]]:
    """Parse a fieldSelector into (field, equal?, value); unsupported fields are a 400 as in the API."""
    terms = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        m = re.fullmatch(r"([A-Za-z.]+)\s*(==|!=|=)\s*(.*)", term)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid selector: '{selector}'; can't understand '{term}'")
        name, op, value = m.groups()
        if name not in resource.field_labels:
            raise ApiError(400, "BadRequest", f'field label not supported: "{name}"')
        terms.append((name, op != "!=", value))
    return terms


_LABEL_TERM = re.compile(
    r"\s*(!?)([A-Za-z0-9_./-]+)(?:\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*"
)


def label_matcher(selector: str) -> list[tuple[str, str, set[str]]]:
    """Parse a labelSelector into (key, op, values) with op one of = != in notin exists !exists."""
    terms: list[tuple[str, str, set[str]]] = []
    pos = 0
    while pos < len(selector):
        m = _LABEL_TERM.match(selector, pos)
        if m is None or m.end() == pos:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {selector!r}")
        neg, key, eq_op, eq_val, set_op, set_vals = m.groups()
        if eq_op:
            terms.append((key, "!=" if eq_op == "!=" else "=", {eq_val}))
        elif set_op:
            terms.append((key, set_op, {v.strip() for v in set_vals.split(",") if v.strip()}))
        else:
            terms.append((key, "!exists" if neg else "exists", set()))
        pos = m.end()
        if pos < len(selector):
            if selector[pos] != ",":
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {selector!r}")
            pos += 1
    return terms


def _labels_match(labels: Mapping[str, str], terms: Iterable[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in terms:
        present, value = key in labels, labels.get(key)
        ok = {
            "=": present and value in values,
            "!=": not present or value not in values,
            "in": present and value in values,
            "notin": not present or value not in values,
            "exists": present,
            "!exists": not present,
        }[op]
        if not ok:
            return False
    return True


# -- the emulator --------------------------------------------------------------------------------


@dataclass
class _PodBehaviour:
    pdb_blocks: int | None = 0
    """429s the eviction answers before it is allowed; None blocks for ever."""
    pdb_name: str = "pdb"
    linger_reads: int = 0
    """After eviction or deletion, the pod stays (terminating) for this many reads by name."""


@dataclass
class _PvcBehaviour:
    resize_after_reads: int | None = 0
    """After an expansion, reads by name until the resize completes; None never completes."""


@dataclass
class _Fault:
    method: str
    path: str
    status: int
    times: int
    retry_after: int | None = None
    delay: float = 0.0
    """Seconds to stall before answering (to exercise client timeouts); status 0 then answers normally."""


@dataclass
class KubeApiEmulator:
    """The state of the fake cluster plus the server. Use the helpers to seed objects."""

    objects: dict[Key, Obj] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _pods: dict[tuple[str, str], _PodBehaviour] = field(default_factory=dict)
    _pvcs: dict[tuple[str, str], _PvcBehaviour] = field(default_factory=dict)
    _terminating: dict[Key, int] = field(default_factory=dict)
    _resizing: dict[Key, int | None] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _logs: dict[tuple[str, str, str], list[tuple[float, str]]] = field(default_factory=dict)
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _runner: web.AppRunner | None = None
    url: str = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- assertions --------------------------------------------------------------------------------

    @property
    def mutations(self) -> list[RecordedRequest]:
        """Every request that could have changed something (anything but GET)."""
        return [r for r in self.requests if r.method != "GET"]

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        """The stored object (a copy); KeyError if absent."""
        return copy.deepcopy(self.objects[(resource_for(kind).key, namespace, name)])

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        return (resource_for(kind).key, namespace, name) in self.objects

    # -- seeding -----------------------------------------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        """Store a whole object as given (kind and metadata.name required); fills uid/resourceVersion."""
        resource = resource_for(obj["kind"], obj.get("apiVersion"))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._rv))
        obj.setdefault("apiVersion", resource.api)
        ns = meta.get("namespace") if resource.namespaced else None
        self.objects[(resource.key, ns, meta["name"])] = obj
        return obj

    def add_node(
        self,
        name: str,
        *,
        ready: bool | None = True,
        control_plane: bool = True,
        unschedulable: bool = False,
        pressure: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        taints: list[Obj] | None = None,
    ) -> Obj:
        """A node; ``ready=None`` is an unreachable node (Ready Unknown). ``pressure`` names conditions
        such as MemoryPressure that are True."""
        all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
        if control_plane:
            all_labels["node-role.kubernetes.io/control-plane"] = ""
        ready_status = {True: "True", False: "False", None: "Unknown"}[ready]
        conditions = [
            {"type": t, "status": "True" if t in set(pressure) else "False", "reason": f"Kubelet{t}"}
            for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
        ]
        conditions.append({"type": "Ready", "status": ready_status, "reason": "KubeletReady"})
        spec: Obj = {"taints": list(taints or [])}
        if unschedulable:
            spec["unschedulable"] = True
        allocatable = {"cpu": "4", "memory": "16Gi", "pods": "110"}
        return self.put(
            {
                "kind": "Node",
                "metadata": {"name": name, "labels": all_labels},
                "spec": spec,
                "status": {"conditions": conditions, "allocatable": allocatable},
            }
        )

    def set_node_ready(self, name: str, ready: bool | None) -> None:
        node = self.objects[("nodes", None, name)]
        for c in node["status"]["conditions"]:
            if c["type"] == "Ready":
                c["status"] = {True: "True", False: "False", None: "Unknown"}[ready]
        node["metadata"]["resourceVersion"] = str(next(self._rv))

    def add_pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        node: str | None = None,
        owner: tuple[str, str] | None = ("ReplicaSet", "app-5d9c7b"),
        mirror: bool = False,
        empty_dir: bool = False,
        pvc: str | None = None,
        phase: str = "Running",
        ready: bool = True,
        labels: Mapping[str, str] | None = None,
        pdb_blocks: int | None = 0,
        pdb_name: str = "pdb",
        linger_reads: int = 0,
    ) -> Obj:
        """A pod. ``owner=None`` is an unmanaged pod; ``mirror`` a static pod's mirror (owned by its
        Node, annotated). ``pdb_blocks``: evictions answer 429 this many times (None: always)."""
        meta: Obj = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
        if mirror:
            meta["annotations"] = {"kubernetes.io/config.mirror": uuid.uuid4().hex}
            owner = ("Node", node or "unknown")
        if owner is not None:
            kind, owner_name = owner
            meta["ownerReferences"] = [
                {
                    "apiVersion": "v1" if kind == "Node" else "apps/v1",
                    "kind": kind,
                    "name": owner_name,
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        volumes: list[Obj] = [{"name": "kube-api-access", "projected": {"sources": []}}]
        if empty_dir:
            volumes.append({"name": "scratch", "emptyDir": {}})
        if pvc is not None:
            volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": pvc}})
        spec: Obj = {"containers": [{"name": "main", "image": "example/app:1"}], "volumes": volumes}
        if node is not None:
            spec["nodeName"] = node
        status = {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
        self._pods[(namespace, name)] = _PodBehaviour(pdb_blocks, pdb_name, linger_reads)
        return self.put({"kind": "Pod", "metadata": meta, "spec": spec, "status": status})

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        pod = self.objects[("pods", namespace, name)]
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        pod["metadata"]["resourceVersion"] = str(next(self._rv))

    def add_storage_class(self, name: str, *, allow_expansion: bool | None) -> Obj:
        obj: Obj = {"kind": "StorageClass", "metadata": {"name": name}, "provisioner": "driver.longhorn.io"}
        if allow_expansion is not None:
            obj["allowVolumeExpansion"] = allow_expansion
        return self.put(obj)

    def add_pvc(
        self,
        name: str,
        namespace: str = "default",
        *,
        storage_class: str | None = "longhorn",
        request: str = "10Gi",
        capacity: str | None = None,
        conditions: list[Obj] | None = None,
        resize_after_reads: int | None = 0,
    ) -> Obj:
        self._pvcs[(namespace, name)] = _PvcBehaviour(resize_after_reads)
        spec: Obj = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": request}},
            "volumeName": f"pvc-{uuid.uuid4()}",
        }
        if storage_class is not None:
            spec["storageClassName"] = storage_class
        status: Obj = {"phase": "Bound", "capacity": {"storage": capacity or request}}
        if conditions:
            status["conditions"] = conditions
        return self.put(
            {
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
                "status": status,
            }
        )

    def add_workload(self, kind: str, name: str, namespace: str = "default") -> Obj:
        """A Deployment, StatefulSet, DaemonSet or ReplicaSet with a one-container pod template."""
        template = {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": "example/app:1"}]},
        }
        spec: Obj = {"selector": {"matchLabels": {"app": name}}, "template": template}
        return self.put(
            {
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace, "generation": 1},
                "spec": spec,
            }
        )

    def set_logs(
        self, namespace: str, pod: str, container: str, lines: Iterable[str | tuple[float, str]]
    ) -> None:
        """A container's log for ``GET .../pods/{pod}/log``: lines, or (age in seconds, line) pairs."""
        self._logs[(namespace, pod, container)] = [
            (0.0, line) if isinstance(line, str) else (float(line[0]), line[1]) for line in lines
        ]

    def fail(
        self, method: str, path: str, *, status: int = 503, times: int = 1, retry_after: int | None = None
    ) -> None:
        """Answer the next ``times`` requests for method+path with this status (a Status object)."""
        self._faults.append(_Fault(method, path, status, times, retry_after))

    def stall(self, method: str, path: str, *, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` answers to method+path for ``seconds`` (then answer normally)."""
        self._faults.append(_Fault(method, path, 0, times, delay=seconds))

    # -- serving -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                ctype,
                body,
                request.headers.get("Authorization"),
            )
        )
        try:
            await self._inject_fault(request.method, request.path)
            if isinstance(body, str):
                raise ApiError(400, "BadRequest", "the request body is not valid JSON")
            route = _parse_path(request.path)
            if route is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if route.subresource == "log" and route.resource.plural == "pods" and request.method == "GET":
                return web.Response(text=self._log(route, dict(request.query)), content_type="text/plain")
            manager = request.query.get("fieldManager") or request.headers.get("User-Agent", "").split("/")[0]
            status, answer = self._dispatch(request.method, route, dict(request.query), ctype, body, manager)
            return web.json_response(answer, status=status)
        except ApiError as exc:
            return exc.response()

    def _log(self, route: Route, query: dict[str, str]) -> str:
        """The log subresource as the API server answers it: container (required when the pod has several),
        tailLines, sinceSeconds, limitBytes; plain text."""
        pod = self._existing(route)
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        container = query.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {route.name}, choose one of: [{' '.join(names)}]",
            )
        if container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {route.name}")
        lines = self._logs.get((route.namespace or "", route.name or "", container), [])
        if "sinceSeconds" in query:
            lines = [(age, text) for age, text in lines if age <= int(query["sinceSeconds"])]
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        text = "".join(f"{line}\n" for _, line in lines)
        if "limitBytes" in query:
            text = text.encode()[: int(query["limitBytes"])].decode("utf-8", "ignore")
        return text

    async def _inject_fault(self, method: str, path: str) -> None:
        for fault in self._faults:
            if fault.method == method and fault.path == path and fault.times > 0:
                fault.times -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if not fault.status:
                    return
                reason = {429: "TooManyRequests", 500: "InternalError"}.get(
                    fault.status, "ServiceUnavailable"
                )
                details = {"retryAfterSeconds": fault.retry_after} if fault.retry_after is not None else None
                raise ApiError(fault.status, reason, f"injected {fault.status}", details)

    def _dispatch(
        self, method: str, route: Route, query: dict[str, str], ctype: str, body: Any, manager: str = ""
    ) -> tuple[int, Obj]:
        if route.subresource == "eviction" and route.resource.plural == "pods" and method == "POST":
            return self._evict(route, body)
        if route.subresource is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if route.name is None:
            if method == "GET":
                return 200, self._list(route, query)
            if method == "POST":
                return 201, self._create(route, body)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if method == "GET":
            return 200, self._read(route)
        if method == "PATCH":
            return 200, self._patch(route, ctype, body, manager)
        if method == "PUT":
            return 200, self._replace(route, body, manager)
        if method == "DELETE":
            return 200, self._delete(route, body)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _key(self, route: Route) -> Key:
        assert route.name is not None
        return (route.resource.key, route.namespace, route.name)

    def _existing(self, route: Route) -> Obj:
        key = self._key(route)
        if key not in self.objects:
            raise not_found(route.resource, key[2])
        return self.objects[key]

    def _list(self, route: Route, query: dict[str, str]) -> Obj:
        fields = field_matcher(route.resource, query.get("fieldSelector", ""))
        labels = label_matcher(query.get("labelSelector", ""))
        items = []
        for (rkey, ns, _), obj in sorted(self.objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])):
            if rkey != route.resource.key or (route.namespace is not None and ns != route.namespace):
                continue
            if not all((_field_value(obj, f) == v) == eq for f, eq, v in fields):
                continue
            if not _labels_match(obj.get("metadata", {}).get("labels") or {}, labels):
                continue
            items.append(copy.deepcopy(obj))
        return {
            "kind": f"{route.resource.kind}List",
            "apiVersion": route.resource.api,
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }

    def _read(self, route: Route) -> Obj:
        key = self._key(route)
        if key in self._resizing:
            self._advance_resize(key)
        obj = copy.deepcopy(self._existing(route))
        if key in self._terminating:
            self._terminating[key] -= 1
            if self._terminating[key] <= 0:
                del self._terminating[key]
                del self.objects[key]
        return obj

    def _create(self, route: Route, body: Any) -> Obj:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            raise ApiError(400, "BadRequest", "the object has no metadata.name")
        name = body["metadata"]["name"]
        if (route.resource.key, route.namespace, name) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{route.resource.plural} "{name}" already exists',
                {"name": name, "kind": route.resource.plural},
            )
        obj = copy.deepcopy(body)
        obj["kind"] = route.resource.kind
        if route.namespace is not None:
            obj["metadata"]["namespace"] = route.namespace
        obj["metadata"].pop("resourceVersion", None)
        return copy.deepcopy(self.put(obj))

    def _patch(self, route: Route, ctype: str, body: Any, manager: str = "") -> Obj:
        current = self._existing(route)
        try:
            if ctype == MERGE_PATCH and isinstance(body, dict):
                patched = merge_patch(current, body)
            elif ctype == STRATEGIC_MERGE_PATCH and isinstance(body, dict):
                patched = strategic_merge_patch(current, body)
            elif ctype == JSON_PATCH and isinstance(body, list):
                patched = json_patch(current, body)
            elif ctype in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH):
                raise ApiError(400, "BadRequest", f"the body is not a valid {ctype} document")
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}"
                )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise invalid(route.resource, route.name or "", [("patch", str(exc))]) from None
        wanted_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if ctype != JSON_PATCH and isinstance(body, dict):
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(route.resource, route.name or "")
        return self._store_update(route, current, patched, manager)

    def _replace(self, route: Route, body: Any, manager: str = "") -> Obj:
        current = self._existing(route)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body is not an object")
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(route.resource, route.name or "")
        return self._store_update(route, current, copy.deepcopy(body), manager)

    def _store_update(self, route: Route, current: Obj, new: Obj, manager: str = "") -> Obj:
        self._validate(route, current, new)
        if manager:
            new["metadata"]["managedFields"] = managed_fields(current, new, manager, route.resource.api)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        if new.get("spec") != current.get("spec") and "generation" in current["metadata"]:
            new["metadata"]["generation"] = int(current["metadata"]["generation"]) + 1
        self.objects[self._key(route)] = new
        if route.resource.plural == "persistentvolumeclaims":
            self._start_resize(route, new)
        return copy.deepcopy(new)

    def _validate(self, route: Route, current: Obj, new: Obj) -> None:
        name = route.name or ""
        old_meta, meta = current["metadata"], new.get("metadata")
        if not isinstance(meta, dict):
            raise invalid(route.resource, name, [("metadata", "Required value")])
        causes = [
            (f"metadata.{f}", "field is immutable")
            for f in ("name", "namespace", "uid")
            if meta.get(f) != old_meta.get(f)
        ]
        for f in ("labels", "annotations"):
            values = meta.get(f) or {}
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                causes.append((f"metadata.{f}", "values must be strings"))
        if route.resource.plural == "nodes":
            unsched = (new.get("spec") or {}).get("unschedulable")
            if unsched is not None and not isinstance(unsched, bool):
                causes.append(("spec.unschedulable", f"Invalid value: {unsched!r}: must be a boolean"))
        if route.resource.plural == "persistentvolumeclaims":
            causes += self._validate_pvc(name, current, new)
        if causes:
            raise invalid(route.resource, name, causes)

    def _validate_pvc(self, name: str, current: Obj, new: Obj) -> list[tuple[str, str]]:
        old_spec, spec = current.get("spec") or {}, new.get("spec") or {}
        old_size, size = _storage_request(old_spec), _storage_request(spec)
        try:
            old_bytes, new_bytes = parse_quantity(old_size), parse_quantity(size)
        except ValueError:
            return [("spec.resources.requests.storage", f"Invalid value: {size!r}: must be a quantity")]
        if {k: v for k, v in spec.items() if k != "resources"} != {
            k: v for k, v in old_spec.items() if k != "resources"
        }:
            return [("spec", "Forbidden: spec is immutable after creation except resources.requests")]
        if new_bytes < old_bytes:
            return [
                ("spec.resources.requests.storage", "Forbidden: field can not be less than previous value")
            ]
        if new_bytes > old_bytes:
            sc_name = spec.get("storageClassName")
            sc = self.objects.get(("storage.k8s.io/storageclasses", None, sc_name or ""))
            if sc is None or not sc.get("allowVolumeExpansion"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'persistentvolumeclaims "{name}" is forbidden: only dynamically provisioned pvc can be '
                    "resized and the storageclass that provisions the pvc must support resize",
                    {"name": name, "kind": "persistentvolumeclaims"},
                )
        return []

    def _start_resize(self, route: Route, pvc: Obj) -> None:
        want = parse_quantity(_storage_request(pvc.get("spec") or {}))
        have = parse_quantity(((pvc.get("status") or {}).get("capacity") or {}).get("storage", "0"))
        if want <= have:
            return
        key = self._key(route)
        pvc.setdefault("status", {})["conditions"] = [
            {"type": "Resizing", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
        behaviour = self._pvcs.get((route.namespace or "", route.name or ""), _PvcBehaviour())
        self._resizing[key] = behaviour.resize_after_reads
        if behaviour.resize_after_reads == 0:
            self._advance_resize(key)

    def _advance_resize(self, key: Key) -> None:
        left = self._resizing[key]
        if left is None:
            return
        if left > 0:
            self._resizing[key] = left - 1
            return
        del self._resizing[key]
        pvc = self.objects[key]
        pvc["status"]["capacity"] = {"storage": _storage_request(pvc["spec"])}
        pvc["status"].pop("conditions", None)
        pvc["metadata"]["resourceVersion"] = str(next(self._rv))

    def _delete(self, route: Route, body: Any) -> Obj:
        key = self._key(route)
        current = self._existing(route)
        pre = (body.get("preconditions") or {}) if isinstance(body, dict) else {}
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
                {"name": key[2], "kind": route.resource.plural},
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(route.resource, key[2])
        return self._remove(key)

    def _remove(self, key: Key) -> Obj:
        obj = self.objects[key]
        behaviour = self._pods.get((key[1] or "", key[2])) if key[0] == "pods" else None
        if behaviour is not None and behaviour.linger_reads > 0:
            obj["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            self._terminating.setdefault(key, behaviour.linger_reads)
            return copy.deepcopy(obj)
        del self.objects[key]
        return copy.deepcopy(obj)

    def _evict(self, route: Route, body: Any) -> tuple[int, Obj]:
        key = self._key(route)
        # As the API server decodes it: a missing kind defaults to the endpoint's (policy/v1 Eviction).
        if not isinstance(body, dict) or body.get("kind", "Eviction") != "Eviction":
            raise ApiError(400, "BadRequest", "the body is not an Eviction")
        if (body.get("metadata") or {}).get("name") != route.name:
            raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
        self._existing(route)
        behaviour = self._pods.get((route.namespace or "", route.name or ""), _PodBehaviour())
        if behaviour.pdb_blocks is None or behaviour.pdb_blocks > 0:
            if behaviour.pdb_blocks is not None:
                behaviour.pdb_blocks -= 1
            raise ApiError(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                {
                    "causes": [
                        {
                            "reason": "DisruptionBudget",
                            "message": f"The disruption budget {behaviour.pdb_name} needs 1 healthy pods "
                            "and has 1 currently",
                        }
                    ]
                },
            )
        if key not in self._terminating:
            self._remove(key)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def _storage_request(spec: Obj) -> str:
    return str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "0"))


_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "": 1,
}


def parse_quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity (independently of daemon's parser, so tests cross-check it)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE]\d{1,2}|)", text.strip())
    if m is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = float(m.group(1)), m.group(2)
    factor = 10 ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIXES[suffix]
    return int(number * factor)
