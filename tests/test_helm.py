"""The Helm chart (deploy/helm/runbookd): what can be checked without a cluster, and without helm.

Always run:
- the chart's config block (values.yaml `config:`, emitted verbatim with toYaml) validates with runbookd's
  own config model, holds no secret, points at the chart's mounts, and starts a real runbookd;
- files/rbac-rules.yaml equals the rules derived from default_registry() (a new action without an RBAC
  update fails here) and grants no wildcard, no secrets, no privilege verbs;
- files/rules/ and files/runbooks/ are identical copies of rules/ and runbooks/;
- Chart.yaml has the required fields and the appVersion of pyproject.toml.

Run with real Helm when RUNBOOKD_HELM_PYTHON names a Python that has the helm-sdkpy package (Helm's Go
library; Python 3.12+, so not this venv): the chart is installed into a loopback Kubernetes API emulator
and the objects Helm creates are checked. Without it those tests are skipped: no helm binary can be
installed here (not in Debian, not on PyPI as a binary for this Python).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from support.inproc import alert_payload
from support.ports import free_port
from support.runbookd import RunbookdProcess

from daemon.actions.base import Action, Params, action
from daemon.actions.rbac import (
    Permission,
    is_kubernetes_permission,
    parse_permission,
    render_rules,
    rules_for,
)
from daemon.actions.registry import default_registry
from daemon.config import parse_config
from daemon.runbooks.loader import load_all

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "runbookd"
FILES = CHART / "files"
SECRETS_DIR = "/etc/runbookd/secrets"
RUNBOOKS_DIR = "/etc/runbookd/runbooks"
SYNC = ".venv/bin/python deploy/helm/sync_chart_files.py"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    data = _yaml(CHART / "values.yaml")
    assert isinstance(data, dict)
    return data


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}.{i}")


def _secret_refs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every {env: ...} / {file: ...} mapping in the config, by key path."""
    return {
        path: node
        for path, node in _walk(config)
        if isinstance(node, dict) and node and set(node) <= {"env", "file"}
    }


# --- Chart.yaml ---------------------------------------------------------------------------------------------


def test_chart_yaml_has_the_required_fields() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "runbookd" == CHART.name
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"]), chart["version"]
    assert chart["description"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "Chart.yaml appVersion must follow pyproject.toml"


def test_every_template_is_a_known_kind_of_file() -> None:
    names = sorted(p.name for p in (CHART / "templates").iterdir())
    assert "NOTES.txt" in names and "_helpers.tpl" in names
    assert all(n.endswith((".yaml", ".tpl", ".txt")) for n in names), names


# --- config.yaml ---------------------------------------------------------------------------------------------


def test_the_chart_config_validates_with_the_daemon_config_model(values: dict[str, Any]) -> None:
    config = parse_config(values["config"], "deploy/helm/runbookd/values.yaml: config")
    assert config.state.path == Path("/var/lib/runbookd/state.db")
    assert [str(p) for p in config.runbooks.paths] == [RUNBOOKS_DIR]
    assert config.server.host == "0.0.0.0", "probes and the Service reach the pod IP"
    assert config.log.format == "json"
    grace = values["terminationGracePeriodSeconds"]
    drain = config.server.drain_timeout + config.server.shutdown_grace  # requests in flight, then steps
    assert drain + 10 <= grace, "the drain must end before the kubelet's SIGKILL"
    # The seed cluster's Thanos Query and Alertmanager (seed/data-model.md); in-cluster Kubernetes.
    assert config.prometheus is not None and config.prometheus.url == "http://thanos-query.monitoring:9090"
    assert config.alertmanager is not None
    assert config.alertmanager.url == "http://alertmanager-operated.monitoring:9093"
    assert config.kubernetes is not None
    assert config.kubernetes.kubeconfig is None and config.kubernetes.host is None


def test_the_chart_config_holds_no_secret_only_file_refs_into_the_secret(values: dict[str, Any]) -> None:
    config = values["config"]
    refs = _secret_refs(config)
    assert {"auth.webhook_token", "auth.tokens.0.secret"} <= set(refs)
    keys = set(values["secret"]["values"])
    for path, ref in refs.items():
        assert set(ref) == {"file"}, f"config.{path}: in the cluster secrets come from the mounted Secret"
        file = Path(ref["file"])
        assert str(file.parent) == SECRETS_DIR, f"config.{path}: {file} is not under {SECRETS_DIR}"
        assert file.name in keys, f"config.{path}: secret.values has no key {file.name}"
    secretish = re.compile(r"token|secret|password|key", re.I)
    for path, node in _walk(config):
        leaf = path.rsplit(".", 1)[-1]
        if isinstance(node, str) and secretish.search(leaf):
            pytest.fail(f"config.{path} holds a literal value; use {{file: {SECRETS_DIR}/<key>}}")
    assert all(v == "" for v in values["secret"]["values"].values()), "no real secret in values.yaml"


def test_the_shipped_runbooks_load_with_the_chart_config(values: dict[str, Any]) -> None:
    """Approver groups named by the shipped runbooks exist in the chart's config, so the pod starts."""
    config = parse_config(values["config"])
    loaded = load_all([FILES / "runbooks"], default_registry(config.plugins), list(config.approvers))
    assert set(loaded) == {_yaml(p)["name"] for p in (FILES / "runbooks").glob("*.yaml")}


def _local_config(values: dict[str, Any], tmp_path: Path, tokens: dict[str, str]) -> dict[str, Any]:
    """The chart's config with its in-pod paths and cluster addresses moved to this machine: secrets
    from files in tmp_path, the chart's runbooks, loopback for every outside system."""
    text = json.dumps(values["config"]).replace(SECRETS_DIR, str(tmp_path / "secrets"))
    config = json.loads(text)
    (tmp_path / "secrets").mkdir()
    for key, value in tokens.items():
        (tmp_path / "secrets" / key).write_text(value + "\n")
    config["runbooks"]["paths"] = [str(FILES / "runbooks")]
    unused = free_port()  # nothing listens there: no test traffic leaves loopback
    config["prometheus"]["url"] = f"http://127.0.0.1:{unused}"
    config["alertmanager"]["url"] = f"http://127.0.0.1:{unused}"
    config["kubernetes"] = {"host": f"http://127.0.0.1:{unused}"}  # in-cluster config needs a pod
    return config


def test_runbookd_serves_with_the_chart_config_and_secret_files(
    values: dict[str, Any], tmp_path: Path
) -> None:
    """A real daemon on the chart's config (paths moved to tmp_path): it reads its tokens from the
    mounted-secret files, serves the probes the Deployment uses, and loads the chart's runbooks."""
    tokens = {"webhook-token": "wh-" + uuid.uuid4().hex, "admin-token": "ad-" + uuid.uuid4().hex}
    config = _local_config(values, tmp_path, tokens)
    proc = RunbookdProcess(
        tmp_path / "rb",
        config,
        webhook_token=tokens["webhook-token"],
        admin_token=tokens["admin-token"],
        env={"RUNBOOKD_WEBHOOK_TOKEN": "", "RUNBOOKD_ADMIN_TOKEN": ""},  # the files, not the env
    )
    proc.start()
    try:
        assert proc.get("/healthz", token="").status == 200
        assert proc.get("/readyz", token="").status == 200
        listed = proc.get("/api/v1/runbooks")
        assert listed.status == 200
        assert "prometheus-scrape-failure" in json.dumps(listed.json())
        payload = alert_payload(job="node-exporter", instance="127.0.0.1:9100")
        assert proc.post_webhook(payload, token="wrong").status == 401
        assert proc.post_webhook(payload).status == 200
        runs = proc.get("/api/v1/runs").json()["runs"]
        assert [(r["runbook"], r["state"]) for r in runs] == [
            ("prometheus-scrape-failure", "awaiting_approval")
        ]
    finally:
        proc.stop()


# --- RBAC ----------------------------------------------------------------------------------------------------


def test_rbac_rules_file_matches_the_action_registry() -> None:
    committed = (FILES / "rbac-rules.yaml").read_text()
    generated = render_rules(rules_for(default_registry()))
    assert committed == generated, (
        "deploy/helm/runbookd/files/rbac-rules.yaml is out of date with the actions' permissions: "
        f"run `{SYNC}` and review the diff"
    )


def test_rbac_rules_grant_no_wildcard_no_secrets_no_privilege_verbs(values: dict[str, Any]) -> None:
    rules = _yaml(FILES / "rbac-rules.yaml") + list(values["rbac"]["extraRules"])
    assert rules, "the kubernetes actions need rules"
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs, resourceNames
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in x for x in rule[field]), f"wildcard in {rule}"
        assert not any(r == "secrets" or r.startswith("secrets/") for r in rule["resources"]), rule
        assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate"}, rule
        assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "patch", "update", "delete"}, rule


def test_rbac_rules_cover_every_declared_permission_and_nothing_else() -> None:
    rules = _yaml(FILES / "rbac-rules.yaml")
    granted = {
        Permission(group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    declared = {
        parse_permission(p) for a in default_registry() for p in a.permissions if is_kubernetes_permission(p)
    }
    assert granted == declared


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("get nodes", Permission("", "nodes", "get")),
        ("create pods/eviction", Permission("", "pods/eviction", "create")),
        ("patch apps/deployments", Permission("apps", "deployments", "patch")),
        ("get storage.k8s.io/storageclasses", Permission("storage.k8s.io", "storageclasses", "get")),
        ("update apps/deployments/scale", Permission("apps", "deployments/scale", "update")),
        ("create policy/poddisruptionbudgets", Permission("policy", "poddisruptionbudgets", "create")),
    ],
)
def test_permission_syntax(text: str, expected: Permission) -> None:
    assert parse_permission(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "* nodes",
        "get *",
        "get",
        "get nodes extra",
        "escalate clusterroles",
        "get apps/*",
        "GET nodes",
        "get a/b/c/d",
    ],
)
def test_bad_permissions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="permission"):
        parse_permission(text)


class _NoParams(Params):
    pass


def test_rules_merge_verbs_per_resource_and_name_their_actions() -> None:
    def make(name: str, *perms: str) -> Action:
        async def fn(ctx: Any, p: _NoParams) -> dict[str, Any]:
            return {}

        return action(name, read_only=False, idempotent=True, permissions=perms)(fn)

    rules = rules_for(
        [make("k.b", "patch nodes", "get nodes"), make("k.a", "get nodes", "get apps/deployments")]
    )
    assert [(r.group, r.resource, r.verbs) for r in rules] == [
        ("", "nodes", ("get", "patch")),
        ("apps", "deployments", ("get",)),
    ]
    assert rules[0].needed_by == (("get", ("k.a", "k.b")), ("patch", ("k.b",)))
    with pytest.raises(ValueError, match=r"action k\.c: permission"):
        rules_for([make("k.c", "get secrets/*")])


# --- copied files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["rules", "runbooks"])
def test_chart_files_are_identical_copies(folder: str) -> None:
    source = {p.name: p.read_bytes() for p in (REPO / folder).glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (FILES / folder).glob("*.yaml")}
    assert source, f"{folder}/ is empty"
    assert sorted(copied) == sorted(source), f"files/{folder}/ lists other files: run `{SYNC}`"
    stale = sorted(name for name in source if copied[name] != source[name])
    assert not stale, f"files/{folder}/{stale} differ from {folder}/: run `{SYNC}`"


def test_sync_script_check_mode_agrees() -> None:
    done = subprocess.run(
        [sys.executable, "deploy/helm/sync_chart_files.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_rule_files_wrap_into_a_prometheusrule_spec() -> None:
    """PrometheusRule.spec is the rule file's top level: `groups:` and nothing else."""
    for path in (FILES / "rules").glob("*.yaml"):
        data = _yaml(path)
        assert list(data) == ["groups"], path
        assert "\n---" not in path.read_text(), f"{path}: one YAML document per file"


# --- templates (text; the real-Helm tests below render them) -------------------------------------------------


def test_deployment_is_one_replica_recreated_with_the_contract_command() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    assert "replicas: 1\n" in text and "type: Recreate" in text
    assert 'command: ["runbookd", "serve", "--config", "/etc/runbookd/config.yaml"]' in text
    assert "replicaCount" not in "".join(p.read_text() for p in (CHART / "templates").iterdir())
    assert '.Files.Get "files/rbac-rules.yaml"' in (CHART / "templates" / "clusterrole.yaml").read_text()
    assert "toYaml .Values.config" in (CHART / "templates" / "configmap.yaml").read_text()


# --- real Helm (optional) ------------------------------------------------------------------------------------

HELM_PYTHON = os.environ.get("RUNBOOKD_HELM_PYTHON")
needs_helm = pytest.mark.skipif(
    not HELM_PYTHON, reason="set RUNBOOKD_HELM_PYTHON to a Python 3.12+ with helm-sdkpy to render the chart"
)

_GROUPS: dict[str, dict[str, tuple[str, bool]]] = {
    "": {
        "configmaps": ("ConfigMap", True),
        "secrets": ("Secret", True),
        "services": ("Service", True),
        "serviceaccounts": ("ServiceAccount", True),
        "persistentvolumeclaims": ("PersistentVolumeClaim", True),
        "namespaces": ("Namespace", False),
    },
    "apps": {"deployments": ("Deployment", True)},
    "rbac.authorization.k8s.io": {
        "clusterroles": ("ClusterRole", False),
        "clusterrolebindings": ("ClusterRoleBinding", False),
    },
    "networking.k8s.io": {"networkpolicies": ("NetworkPolicy", True)},
    "monitoring.coreos.com": {
        "servicemonitors": ("ServiceMonitor", True),
        "prometheusrules": ("PrometheusRule", True),
    },
}


class RecordingKubeAPI:
    """Just enough of the API server for `helm install`: discovery, get (404 until created), create.
    Keeps what Helm creates, in order. Release records stay in Helm's memory driver (HELM_DRIVER)."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self._store: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self._rv = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _resources(group: str) -> dict[str, Any]:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/v1" if group else "v1",
            "resources": [
                {
                    "name": r,
                    "singularName": k.lower(),
                    "namespaced": ns,
                    "kind": k,
                    "verbs": ["create", "get"],
                }
                for r, (k, ns) in _GROUPS[group].items()
            ],
        }

    async def _handle(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            groups = [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}]} for g in _GROUPS if g
            ]
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if parts == ["api", "v1"]:
            return web.json_response(self._resources(""))
        if parts[0] == "apis" and len(parts) == 3 and parts[1] in _GROUPS:
            return web.json_response(self._resources(parts[1]))
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or group not in _GROUPS or rest[0] not in _GROUPS[group]:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
        if request.method == "POST" and len(rest) == 1:
            body = await request.json()
            body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=str(next(self._rv)))
            if namespace:
                body["metadata"]["namespace"] = namespace
            self._store[(group, rest[0], namespace, body["metadata"]["name"])] = body
            self.created.append(body)
            return web.json_response(body, status=201)
        if request.method == "GET" and len(rest) == 2:
            found = self._store.get((group, rest[0], namespace, rest[1]))
            if found is not None:
                return web.json_response(found)
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                },
                status=404,
            )
        return web.json_response({"kind": "Status", "code": 405}, status=405)


_INSTALL = """
import asyncio, json, sys
import helm_sdkpy as h
async def main():
    cfg = h.Configuration(namespace="monitoring", kubeconfig=sys.argv[1], kubecontext="emulator")
    await h.Install(cfg).run("runbookd", sys.argv[2], values=json.loads(sys.argv[3]), wait=False, timeout=60)
try:
    asyncio.run(main())
except Exception as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
async def helm_install(tmp_path: Path) -> AsyncIterator[Any]:
    api = RecordingKubeAPI()
    await api.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": api.url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "u"}}],
                "current-context": "emulator",
            }
        )
    )

    async def install(overrides: dict[str, Any] | None = None) -> tuple[int, str, list[dict[str, Any]]]:
        """Install the chart with these values; (exit code, stderr, the objects Helm created)."""
        api.created.clear()
        assert HELM_PYTHON
        env = {"HOME": str(tmp_path), "HELM_DRIVER": "memory", "PATH": os.environ.get("PATH", "")}
        proc = await asyncio.create_subprocess_exec(
            HELM_PYTHON,
            "-c",
            _INSTALL,
            str(kubeconfig),
            str(CHART),
            json.dumps(overrides or {}),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        return proc.returncode or 0, err.decode(), list(api.created)

    try:
        yield install
    finally:
        await api.stop()


def _by_kind(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


@needs_helm
async def test_helm_renders_the_defaults_as_designed(helm_install: Any, values: dict[str, Any]) -> None:
    code, err, objs = await helm_install()
    assert code == 0, err
    kinds = _by_kind(objs)
    expected = ["ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "ClusterRole"]
    assert sorted(kinds) == sorted([*expected, "ClusterRoleBinding", "Service", "Deployment"])
    (deploy,) = kinds["Deployment"]
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["runbookd", "serve", "--config", "/etc/runbookd/config.yaml"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/var/lib/runbookd"] == "state" and mounts[RUNBOOKS_DIR] == "runbooks"
    assert mounts[SECRETS_DIR] == "secrets"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes["state"]["persistentVolumeClaim"]["claimName"]
        == kinds["PersistentVolumeClaim"][0]["metadata"]["name"]
    )

    maps = {m["metadata"]["name"]: m["data"] for m in kinds["ConfigMap"]}
    rendered = yaml.safe_load(maps["runbookd-config"]["config.yaml"])
    assert rendered == values["config"], "config.yaml is exactly values.config"
    parse_config(rendered)
    assert maps["runbookd-runbooks"] == {p.name: p.read_text() for p in (FILES / "runbooks").glob("*.yaml")}

    (role,) = kinds["ClusterRole"]
    assert role["rules"] == _yaml(FILES / "rbac-rules.yaml")
    (binding,) = kinds["ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "runbookd", "namespace": "monitoring"}]
    (service,) = kinds["Service"]
    assert service["metadata"]["name"] == "runbookd", "deploy/alertmanager/ routes to runbookd.monitoring"
    assert service["spec"]["ports"][0]["port"] == 8080


@needs_helm
async def test_helm_renders_the_optional_objects(helm_install: Any) -> None:
    code, err, objs = await helm_install(
        {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
            "networkPolicy": {"enabled": True},
            "alertmanagerWebhookSecret": {"create": True},
            "secret": {"values": {"webhook-token": "w", "admin-token": "a"}},
            "persistence": {"enabled": False},
        }
    )
    assert code == 0, err
    kinds = _by_kind(objs)
    assert "PersistentVolumeClaim" not in kinds
    rules = {o["metadata"]["name"]: o["spec"] for o in kinds["PrometheusRule"]}
    assert rules == {f"runbookd-{p.stem}": _yaml(p) for p in (REPO / "rules").glob("*.yaml")}
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert {"action": "replace", "targetLabel": "job", "replacement": "runbookd"} in endpoint["relabelings"]
    secrets = {s["metadata"]["name"]: s["stringData"] for s in kinds["Secret"]}
    assert secrets == {
        "runbookd-secrets": {"webhook-token": "w", "admin-token": "a"},
        "runbookd-webhook": {"token": "w"},
    }
    (policy,) = kinds["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for cm in kinds["ConfigMap"]:
        assert "w" not in cm["data"].values() and "a" not in cm["data"].values()


@needs_helm
async def test_helm_refuses_contradictory_values(helm_install: Any) -> None:
    shipped = next((FILES / "runbooks").glob("*.yaml")).name
    code, err, _ = await helm_install({"runbooks": {"extra": {shipped: "name: x"}}})
    assert code != 0 and "a shipped runbook has that file name" in err
    code, err, _ = await helm_install(
        {"secret": {"existingSecret": "mine"}, "alertmanagerWebhookSecret": {"create": True}}
    )
    assert code != 0 and "create that Secret yourself" in err
    code, err, _ = await helm_install({"config": {"server": {"listen": "nonsense"}}})
    assert code != 0 and "config.server.listen must be HOST:PORT" in err
