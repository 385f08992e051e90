"""Reading Kubernetes objects (plain JSON dicts, as the API answers them): conditions, owners, roles."""

from __future__ import annotations

from typing import Any

from daemon.errors import PermanentError

Obj = dict[str, Any]

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
NODE_PRESSURES = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
RESIZE_CONDITIONS = ("Resizing", "FileSystemResizePending", "ControllerResizeError", "NodeResizeError")


def meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def spec(obj: Obj) -> Obj:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def status(obj: Obj) -> Obj:
    s = obj.get("status")
    return s if isinstance(s, dict) else {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def ref(obj: Obj) -> str:
    """namespace/name, as operators write a pod."""
    m = meta(obj)
    return f"{m.get('namespace', '')}/{m.get('name', '')}" if m.get("namespace") else str(m.get("name", ""))


def conditions(obj: Obj) -> list[Obj]:
    found = status(obj).get("conditions")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def condition_status(obj: Obj, kind: str) -> str | None:
    for c in conditions(obj):
        if c.get("type") == kind:
            return str(c.get("status"))
    return None


def condition_summary(obj: Obj) -> list[Obj]:
    keep = ("type", "status", "reason", "message", "lastTransitionTime")
    return [{k: c[k] for k in keep if k in c} for c in conditions(obj)]


# -- nodes ---------------------------------------------------------------------------------------


def node_ready(node: Obj) -> str:
    """The Ready condition's status: True, False, or Unknown (also when the node reports none)."""
    return condition_status(node, "Ready") or "Unknown"


def is_control_plane(node: Obj) -> bool:
    labels = meta(node).get("labels") or {}
    return CONTROL_PLANE_LABEL in labels


def is_unschedulable(node: Obj) -> bool:
    return spec(node).get("unschedulable") is True


def pressures(node: Obj) -> list[str]:
    return [t for t in NODE_PRESSURES if condition_status(node, t) == "True"]


def find_node(nodes: list[Obj], name: str) -> Obj:
    for node in nodes:
        if name_of(node) == name:
            return node
    raise PermanentError(f"node {name} does not exist in the cluster", status=404)


# -- pods ----------------------------------------------------------------------------------------


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference with controller: true (ReplicaSet, StatefulSet, DaemonSet, Job, Node...)."""
    for owner in meta(obj).get("ownerReferences") or []:
        if isinstance(owner, dict) and owner.get("controller") is True:
            return owner
    return None


def is_mirror(pod: Obj) -> bool:
    return MIRROR_ANNOTATION in (meta(pod).get("annotations") or {})


def is_finished(pod: Obj) -> bool:
    return status(pod).get("phase") in ("Succeeded", "Failed")


def uses_empty_dir(pod: Obj) -> bool:
    return any(isinstance(v, dict) and "emptyDir" in v for v in spec(pod).get("volumes") or [])


def pod_ready(pod: Obj) -> bool:
    return condition_status(pod, "Ready") == "True" and meta(pod).get("deletionTimestamp") is None


def claims_of(pod: Obj) -> list[str]:
    out = []
    for v in spec(pod).get("volumes") or []:
        claim = v.get("persistentVolumeClaim") if isinstance(v, dict) else None
        if isinstance(claim, dict) and claim.get("claimName"):
            out.append(str(claim["claimName"]))
    return out


def pod_summary(pod: Obj) -> Obj:
    owner = controller_of(pod)
    return {
        "namespace": meta(pod).get("namespace"),
        "name": name_of(pod),
        "phase": status(pod).get("phase"),
        "ready": pod_ready(pod),
        "node": spec(pod).get("nodeName"),
        "owner": {"kind": owner.get("kind"), "name": owner.get("name")} if owner else None,
        "daemonset": bool(owner and owner.get("kind") == "DaemonSet"),
        "mirror": is_mirror(pod),
        "terminating": meta(pod).get("deletionTimestamp") is not None,
    }
