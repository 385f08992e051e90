"""The Kubernetes API emulator answers kubernetes-asyncio's generated API the way the API server does.

These drive the emulator with the stock typed client (CoreV1Api, StorageV1Api), not runbookd's code,
so the emulator's fidelity is checked on its own before the actions are tested against it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from support.kube_api import KubeApiEmulator
from support.kube_fixtures import api_client_for


@pytest_asyncio.fixture
async def core(kube_api: KubeApiEmulator) -> AsyncIterator[Any]:
    api = api_client_for(kube_api.url)
    try:
        yield k8s.CoreV1Api(api)
    finally:
        await api.close()


def status_of(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return dict(body)


async def test_field_and_label_selectors_filter_lists(kube_api: KubeApiEmulator, core: Any) -> None:
    kube_api.add_node("node-194")
    kube_api.add_node("node-196")
    kube_api.add_pod("a", node="node-194", labels={"app": "web", "tier": "front"})
    kube_api.add_pod("b", "monitoring", node="node-194", labels={"app": "prom"})
    kube_api.add_pod("c", node="node-196", labels={"app": "web"})

    on_194 = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-194")
    assert sorted(p.metadata.name for p in on_194.items) == ["a", "b"]
    web = await core.list_pod_for_all_namespaces(label_selector="app in (web),tier!=back")
    assert sorted(p.metadata.name for p in web.items) == ["a", "c"]
    both = await core.list_namespaced_pod(
        "default", field_selector="spec.nodeName!=node-194", label_selector="app"
    )
    assert [p.metadata.name for p in both.items] == ["c"]

    with pytest.raises(ApiException) as err:
        await core.list_pod_for_all_namespaces(field_selector="spec.containers=x")
    assert err.value.status == 400
    assert "field label not supported" in status_of(err.value)["message"]


async def test_patch_content_types_and_resource_version_conflicts(
    kube_api: KubeApiEmulator,
    core: Any,
) -> None:
    kube_api.add_node("node-194")
    before = kube_api.get("Node", "node-194")["metadata"]["resourceVersion"]

    node = await core.patch_node("node-194", {"spec": {"unschedulable": True}})
    assert node.spec.unschedulable is True
    assert kube_api.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert node.metadata.resource_version != before

    with pytest.raises(ApiException) as err:
        await core.patch_node(
            "node-194", {"metadata": {"resourceVersion": before}, "spec": {"unschedulable": False}}
        )
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "Conflict"
    assert kube_api.get("Node", "node-194")["spec"]["unschedulable"] is True

    merged = await core.patch_node(
        "node-194", {"spec": {"unschedulable": None}}, _content_type="application/merge-patch+json"
    )
    assert merged.spec.unschedulable is None

    stale = await core.read_node("node-194")
    await core.patch_node("node-194", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as err:
        await core.replace_node("node-194", stale)
    assert err.value.status == 409


async def test_managed_fields_follow_who_last_changed_a_field(kube_api: KubeApiEmulator, core: Any) -> None:
    """Operation Update: the request's fieldManager owns what it changed, taken from the others; a field
    removed is owned by nobody; set again to the value it has, a field keeps its owner."""
    kube_api.add_node("node-194")

    def owners() -> dict[str, Any]:
        fields = kube_api.get("Node", "node-194")["metadata"].get("managedFields") or []
        assert all(f["operation"] == "Update" and f["fieldsType"] == "FieldsV1" for f in fields)
        return {f["manager"]: f["fieldsV1"] for f in fields}

    assert owners() == {}  # put by the test: no manager
    await core.patch_node("node-194", {"spec": {"unschedulable": True}}, field_manager="runbookd")
    assert owners() == {"runbookd": {"f:spec": {"f:unschedulable": {}}}}
    await core.patch_node("node-194", {"metadata": {"labels": {"x": "1"}}}, field_manager="kubectl-label")
    assert owners() == {
        "runbookd": {"f:spec": {"f:unschedulable": {}}},
        "kubectl-label": {"f:metadata": {"f:labels": {"f:x": {}}}},
    }
    await core.patch_node("node-194", {"spec": {"unschedulable": True}}, field_manager="kubectl")
    assert "kubectl" not in owners()  # nothing changed
    await core.patch_node("node-194", {"spec": {"unschedulable": None}}, field_manager="kubectl")
    assert owners() == {"kubectl-label": {"f:metadata": {"f:labels": {"f:x": {}}}}}  # removed: nobody's
    await core.patch_node("node-194", {"spec": {"unschedulable": True}})  # no fieldManager: the User-Agent's
    agent = kube_api.requests[-1]
    assert agent.query == {}
    assert [m for m in owners() if m != "kubectl-label"] == ["OpenAPI-Generator"]
    await core.patch_node("node-194", {"metadata": {"labels": {"x": "2"}}}, field_manager="runbookd")
    assert owners()["runbookd"] == {"f:metadata": {"f:labels": {"f:x": {}}}}
    assert "kubectl-label" not in owners()  # its only field taken over


async def test_invalid_patches_are_422_and_unknown_media_types_415(
    kube_api: KubeApiEmulator,
    core: Any,
) -> None:
    kube_api.add_node("node-194")
    with pytest.raises(ApiException) as err:
        await core.patch_node("node-194", {"spec": {"unschedulable": "yes"}})
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec.unschedulable"

    with pytest.raises(ApiException) as err:
        await core.patch_node("node-194", [{"op": "test", "path": "/spec/unschedulable", "value": True}])
    assert err.value.status == 422

    async with aiohttp.ClientSession() as http:
        url = f"{kube_api.url}/api/v1/nodes/node-194"
        headers = {"Content-Type": "text/plain"}
        async with http.patch(url, data=b"{}", headers=headers) as resp:
            assert resp.status == 415
            assert (await resp.json())["reason"] == "UnsupportedMediaType"
        headers = {"Content-Type": "application/merge-patch+json"}
        async with http.patch(url, data=b"{not json", headers=headers) as resp:
            assert resp.status == 400
    assert "unschedulable" not in kube_api.get("Node", "node-194")["spec"]


async def test_eviction_answers_429_while_a_budget_blocks_then_evicts(
    kube_api: KubeApiEmulator,
    core: Any,
) -> None:
    kube_api.add_pod("web-1", node="node-194", pdb_blocks=1, pdb_name="web-pdb")
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name="web-1", namespace="default"))

    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("web-1", "default", body)
    assert err.value.status == 429
    status = status_of(err.value)
    assert status["reason"] == "TooManyRequests"
    assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "web-pdb" in status["details"]["causes"][0]["message"]
    assert kube_api.exists("Pod", "web-1", "default")

    await core.create_namespaced_pod_eviction("web-1", "default", body)
    assert not kube_api.exists("Pod", "web-1", "default")

    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("web-1", "default", body)
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'pods "web-1" not found'

    kube_api.add_pod("web-2")
    wrong = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name="web-1", namespace="default"))
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_pod_eviction("web-2", "default", wrong)
    assert err.value.status == 400


async def test_delete_preconditions_and_lingering_pods(kube_api: KubeApiEmulator, core: Any) -> None:
    kube_api.add_pod("db-0", owner=("StatefulSet", "db"), linger_reads=1)
    with pytest.raises(ApiException) as err:
        await core.delete_namespaced_pod("db-0", "default", body={"preconditions": {"uid": "not-its-uid"}})
    assert err.value.status == 409
    assert kube_api.exists("Pod", "db-0", "default")

    uid = kube_api.get("Pod", "db-0", "default")["metadata"]["uid"]
    await core.delete_namespaced_pod("db-0", "default", body={"preconditions": {"uid": uid}})
    terminating = await core.read_namespaced_pod("db-0", "default")
    assert terminating.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_pod("db-0", "default")
    assert err.value.status == 404


async def test_pvc_expansion_admission_validation_and_resize(
    kube_api: KubeApiEmulator,
    core: Any,
) -> None:
    kube_api.add_storage_class("longhorn", allow_expansion=True)
    kube_api.add_storage_class("local-path", allow_expansion=None)
    kube_api.add_pvc("data", storage_class="longhorn", request="10Gi", resize_after_reads=1)
    kube_api.add_pvc("logs", storage_class="local-path", request="10Gi")

    grow = {"spec": {"resources": {"requests": {"storage": "12Gi"}}}}
    with pytest.raises(ApiException) as err:
        await core.patch_namespaced_persistent_volume_claim("logs", "default", grow)
    assert err.value.status == 403
    assert "must support resize" in status_of(err.value)["message"]

    with pytest.raises(ApiException) as err:
        await core.patch_namespaced_persistent_volume_claim(
            "data", "default", {"spec": {"resources": {"requests": {"storage": "5Gi"}}}}
        )
    assert err.value.status == 422
    assert "less than previous value" in status_of(err.value)["message"]

    pvc = await core.patch_namespaced_persistent_volume_claim("data", "default", grow)
    assert pvc.spec.resources.requests["storage"] == "12Gi"
    assert [c.type for c in pvc.status.conditions] == ["Resizing"]
    assert pvc.status.capacity["storage"] == "10Gi"
    await core.read_namespaced_persistent_volume_claim("data", "default")
    done = await core.read_namespaced_persistent_volume_claim("data", "default")
    assert done.status.capacity["storage"] == "12Gi"
    assert not done.status.conditions


async def test_unknown_paths_and_objects_are_404_status(kube_api: KubeApiEmulator, core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await core.read_node("node-404")
    assert err.value.status == 404
    assert status_of(err.value)["details"] == {"name": "node-404", "kind": "nodes"}
    assert [r.permission for r in kube_api.requests] == ["get nodes"]
