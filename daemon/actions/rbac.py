"""Kubernetes RBAC rules derived from the actions' declared permissions.

Each action lists the API permissions it uses (``Action.permissions``). This module turns those strings
into ClusterRole rules, one rule per API group and resource, so the Helm chart grants exactly what the
registered actions need and nothing else. ``deploy/helm/sync_chart_files.py`` writes the result into the
chart (``files/rbac-rules.yaml``) and ``tests/test_helm.py`` fails when the committed file drifts from the
registry.

Permission syntax (see ``daemon.actions.kubernetes``):

- ``verb resource``: the core API group, for example ``get nodes``;
- ``verb resource/subresource``: a subresource in the core group, for example ``create pods/eviction``;
- ``verb group/resource``: another group, for example ``patch apps/deployments`` or
  ``get storage.k8s.io/storageclasses``;
- ``verb group/resource/subresource``: a subresource in another group.

Object storage permissions are declared as the IAM actions an S3 / MinIO policy grants, ``s3:Action``
(for example ``s3:GetObject``). They are not Kubernetes permissions: ``rules_for`` leaves them out and
``object_storage_permissions`` lists them (the policy of runbookd's MinIO user must grant them).

Two-part names are ambiguous (``apps/deployments`` vs ``pods/eviction``): the first part is read as an API
group when it contains a dot or is one of Kubernetes' built-in groups without one (``apps``, ``batch``,
``policy``, ...), and as a core resource otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.actions.base import Action

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
"""The verbs an action may ask for. Wildcards and the privilege verbs (escalate, bind, impersonate) are
deliberately absent: no action of a remediation daemon should hold them."""

DOTLESS_GROUPS = frozenset({"apps", "autoscaling", "batch", "extensions", "policy"})
"""Built-in API groups whose names have no dot; every other group is a DNS subdomain."""

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_S3_PERMISSION = re.compile(r"^s3:[A-Z][A-Za-z]+$")


def is_kubernetes_permission(text: str) -> bool:
    """Kubernetes permissions are ``verb resource``; ``s3:Action`` ones are for object storage."""
    return ":" not in text


def is_opensearch_permission(text: str) -> bool:
    """``opensearch:<security plugin action>`` (e.g. ``opensearch:cluster:admin/snapshot/create``): what
    the OpenSearch role of runbookd's user must allow; neither Kubernetes nor object storage."""
    return text.startswith("opensearch:")


def opensearch_permissions(actions: Iterable[Action]) -> dict[str, tuple[str, ...]]:
    """OpenSearch security plugin action -> the actions that need it, sorted."""
    users: dict[str, set[str]] = {}
    for a in actions:
        for text in a.permissions:
            if is_opensearch_permission(text):
                users.setdefault(text.removeprefix("opensearch:"), set()).add(a.name)
    return {perm: tuple(sorted(names)) for perm, names in sorted(users.items())}


def object_storage_permissions(actions: Iterable[Action]) -> dict[str, tuple[str, ...]]:
    """IAM action (``s3:GetObject``) -> the actions that need it, sorted. Raises ValueError on a malformed
    one."""
    users: dict[str, set[str]] = {}
    for a in actions:
        for text in a.permissions:
            if is_kubernetes_permission(text) or is_opensearch_permission(text):
                continue
            if not _S3_PERMISSION.fullmatch(text):
                raise ValueError(
                    f"action {a.name}: permission {text!r}: expected s3:Action, e.g. s3:GetObject"
                )
            users.setdefault(text, set()).add(a.name)
    return {perm: tuple(sorted(names)) for perm, names in sorted(users.items())}


@dataclass(frozen=True, order=True)
class Permission:
    group: str
    """API group; ``""`` is the core group."""
    resource: str
    """Resource, with ``/subresource`` when the permission is on a subresource."""
    verb: str


@dataclass(frozen=True)
class Rule:
    """One ClusterRole rule, with the actions that need each of its verbs (for review)."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    needed_by: tuple[tuple[str, tuple[str, ...]], ...]
    """(verb, action names) pairs, in the order of ``verbs``."""


def parse_permission(text: str) -> Permission:
    """``"patch apps/deployments"`` -> Permission("apps", "deployments", "patch"). Raises ValueError."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"permission {text!r}: expected 'VERB [GROUP/]RESOURCE[/SUBRESOURCE]'")
    verb, name = parts
    if verb not in VERBS:
        raise ValueError(f"permission {text!r}: verb must be one of {', '.join(VERBS)}")
    pieces = name.split("/")
    if len(pieces) == 1:
        group, resource = "", pieces[0]
    elif len(pieces) == 2:
        first, second = pieces
        if "." in first or first in DOTLESS_GROUPS:
            group, resource = first, second
        else:
            group, resource = "", f"{first}/{second}"
    elif len(pieces) == 3:
        group, resource = pieces[0], f"{pieces[1]}/{pieces[2]}"
    else:
        raise ValueError(f"permission {text!r}: too many '/' in {name!r}")
    for part in ([group] if group else []) + resource.split("/"):
        if not _NAME.fullmatch(part):
            raise ValueError(f"permission {text!r}: {part!r} is not a lowercase API name (no wildcards)")
    return Permission(group=group, resource=resource, verb=verb)


def rules_for(actions: Iterable[Action]) -> list[Rule]:
    """The least set of rules that covers every action's permissions: one rule per (group, resource),
    sorted by group then resource, verbs in the order of VERBS."""
    users: dict[Permission, set[str]] = {}
    for a in actions:
        for text in a.permissions:
            if not is_kubernetes_permission(text):
                continue
            try:
                perm = parse_permission(text)
            except ValueError as exc:
                raise ValueError(f"action {a.name}: {exc}") from None
            users.setdefault(perm, set()).add(a.name)
    by_resource: dict[tuple[str, str], dict[str, set[str]]] = {}
    for perm, names in users.items():
        by_resource.setdefault((perm.group, perm.resource), {})[perm.verb] = names
    rules = []
    for (group, resource), verbs in sorted(by_resource.items()):
        ordered = tuple(v for v in VERBS if v in verbs)
        rules.append(
            Rule(
                group=group,
                resource=resource,
                verbs=ordered,
                needed_by=tuple((v, tuple(sorted(verbs[v]))) for v in ordered),
            )
        )
    return rules


HEADER = """\
# ClusterRole rules for runbookd, generated from the permissions its registered actions declare
# (daemon/actions/rbac.py). Do not edit by hand: run `.venv/bin/python deploy/helm/sync_chart_files.py`.
# tests/test_helm.py fails when this file no longer matches daemon.actions.registry.default_registry().
# Above each rule: which actions use each verb.
"""


def render_rules(rules: Iterable[Rule]) -> str:
    """The rules as a YAML list (with review comments), as the chart's ClusterRole includes it."""
    out = [HEADER]
    for r in rules:
        width = max(len(v) for v in r.verbs) + 1
        out.append(f"# {r.group or 'core'}: {r.resource}\n")
        for verb, names in r.needed_by:
            out.append(f"#   {(verb + ':').ljust(width)} {', '.join(names)}\n")
        out.append(f'- apiGroups: ["{r.group}"]\n')
        out.append(f"  resources: [{r.resource}]\n")
        out.append(f"  verbs: [{', '.join(r.verbs)}]\n")
    return "".join(out)
