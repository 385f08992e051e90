"""The Helm chart (deploy/helm/runbookd), checked without a cluster:

- the chart's config block (values.yaml `config:`, emitted verbatim with toYaml) validates with runbookd's
  own config model, holds no secret, points at the chart's mounts, and starts a real runbookd;
- files/rbac-rules.yaml equals the rules derived from default_registry() (a new action without an RBAC
  update fails here) and grants no wildcard, no secrets, no privilege verbs;
- files/rules/ and files/runbooks/ are identical copies of rules/ and runbooks/;
- Chart.yaml has the required fields and the appVersion of pyproject.toml;
- Helm's own engine (helm-python-sdk, a test dependency) lints and renders the chart with the defaults
  and each documented variant (SQLite, PostgreSQL with two replicas, Slack with its Ingress, S3,
  OpenSearch, NetworkPolicy, the Prometheus Operator objects, the seed cluster's example values); every
  manifest validates against the Kubernetes 1.28 schemas (kubernetes-validate, strict) and the
  PrometheusRules' groups pass promtool. Nothing here is skipped: CI installs the tools.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import helm_chart
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
    # The Prometheus Operator's own Service names, not one cluster's (those are in examples/); in-cluster
    # Kubernetes.
    assert (
        config.prometheus is not None
        and config.prometheus.url == "http://prometheus-operated.monitoring:9090"
    )
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
    note = (FILES / folder / "README.md").read_text()
    assert note.startswith("# Generated: do not edit") and f"`{folder}/`" in note, "say it is generated"


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


# --- real Helm: lint, render, validate -------------------------------------------------------------------

SEED_EXAMPLE = REPO / "deploy" / "helm" / "examples" / "seed-cluster.yaml"
PG_URL = "postgresql://runbookd@pg-rw.db:5432/runbookd?sslmode=verify-full"

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sqlite-emptydir": {"persistence": {"enabled": False}},
    "postgresql": {
        "config": {"state": {"url": PG_URL, "password": {"file": f"{SECRETS_DIR}/db-password"}}},
        "secret": {"values": {"db-password": "p"}},
        "caBundles": {"postgresql": {"secret": "pg-ca", "key": "ca.crt"}},
    },
    "slack": {
        "config": {
            "slack": {
                "bot_token": {"file": f"{SECRETS_DIR}/slack-bot-token"},
                "signing_secret": {"file": f"{SECRETS_DIR}/slack-signing-secret"},
                "channel": "#ops-approvals",
            }
        },
        "secret": {"values": {"slack-bot-token": "b", "slack-signing-secret": "s"}},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "runbookd.example.com",
            "tlsSecretName": "tls",
        },
    },
    "s3": {
        "config": {
            "s3": {
                "endpoint_url": "https://minio.minio:9000",
                "access_key": {"file": f"{SECRETS_DIR}/s3-access-key"},
                "secret_key": {"file": f"{SECRETS_DIR}/s3-secret-key"},
                "ca_bundle": "/etc/runbookd/ca/minio.crt",
                "addressing_style": "path",
            }
        },
        "secret": {"values": {"s3-access-key": "a", "s3-secret-key": "s"}},
        "caBundles": {"minio": {"configMap": "minio-ca"}},
    },
    "opensearch": {
        "config": {
            "opensearch": {
                "url": "https://opensearch.logging:9200",
                "username": {"file": f"{SECRETS_DIR}/opensearch-username"},
                "password": {"file": f"{SECRETS_DIR}/opensearch-password"},
                "ca_bundle": "/etc/runbookd/ca/opensearch.crt",
                "verify_tls": True,
            }
        },
        "secret": {"values": {"opensearch-username": "u", "opensearch-password": "p"}},
        "caBundles": {"opensearch": {"secret": "opensearch-certs", "key": "ca.crt"}},
    },
    "networkpolicy": {
        "networkPolicy": {
            "enabled": True,
            "egress": {
                "restrict": True,
                "apiServer": {"cidrs": ["10.0.0.10/32"]},
                "to": {"minio": {"cidrs": ["10.1.2.3/32"]}, "opensearch": {"namespaces": ["logging"]}},
            },
        }
    },
    "prometheus-operator": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
        "alertmanagerWebhookSecret": {"create": True},
        "secret": {"values": {"webhook-token": "w", "admin-token": "a"}},
    },
    "seed-cluster": _yaml(SEED_EXAMPLE),
}
"""The documented variants (values.yaml, docs/deployment.md); each is linted, rendered and validated."""


def _daemon_config(rendered: dict[str, Any]) -> Any:
    """The rendered config.yaml, checked whole by the daemon's own model."""
    config = json.loads(json.dumps(rendered))
    return parse_config(config, "rendered config.yaml")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    name = request.param
    return name, VARIANTS[name], helm_chart.render(CHART, VARIANTS[name])


def _deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = helm_chart.by_kind(objs)["Deployment"]
    return deploy


def _rendered_config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    maps = {m["metadata"]["name"]: m["data"] for m in helm_chart.by_kind(objs)["ConfigMap"]}
    config = yaml.safe_load(maps["runbookd-config"]["config.yaml"])
    assert isinstance(config, dict)
    return config


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_helm_lint_strict_passes(name: str) -> None:
    assert helm_chart.lint(CHART, VARIANTS[name]) == []


def test_every_manifest_validates_against_kubernetes_1_28(variant: Any) -> None:
    name, _, objs = variant
    errors = [e for o in objs for e in helm_chart.schema_errors(o)]
    assert not errors, f"{name}:\n" + "\n".join(errors)
    for o in objs:
        assert o["metadata"].get("namespace", "monitoring") == "monitoring" or o["kind"] == "Secret", o


def test_the_rendered_config_is_a_valid_runbookd_config_with_its_secrets(variant: Any) -> None:
    name, values, objs = variant
    config = _rendered_config(objs)
    _daemon_config(config)
    kinds = helm_chart.by_kind(objs)
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in kinds["Secret"]}
    keys = set(secrets["runbookd-secrets"])
    for path, ref in _secret_refs(config).items():
        assert set(ref) == {"file"}, f"{name}: config.{path}"
        assert Path(ref["file"]).name in keys, f"{name}: config.{path} names a key the Secret lacks"
    mounts = {
        m["mountPath"] for m in _deployment(objs)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    ca_paths = [v for p, v in _walk(config) if p.endswith("ca_bundle")]
    for ca in ca_paths:
        assert str(Path(ca).parent) in mounts, f"{name}: {ca} is not on a mounted volume"
        assert Path(ca).stem in values.get("caBundles", {}), f"{name}: no caBundles entry for {ca}"
    for cm in kinds["ConfigMap"]:
        for secret_value in (v for s in secrets.values() for v in s.values() if len(v) > 2):
            assert secret_value not in json.dumps(cm["data"]), f"{name}: a secret is in a ConfigMap"


def test_the_defaults_render_one_recreated_sqlite_replica_with_short_node_loss_tolerations(
    values: dict[str, Any],
) -> None:
    objs = helm_chart.render(CHART, {})
    kinds = helm_chart.by_kind(objs)
    assert sorted(kinds) == sorted(
        [
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "PersistentVolumeClaim",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
        ]
    )
    spec = _deployment(objs)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert "affinity" not in pod
    tolerations = {t["key"]: t for t in pod["tolerations"]}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        assert tolerations[key]["effect"] == "NoExecute"
        assert tolerations[key]["tolerationSeconds"] == values["nodeLossTolerationSeconds"] < 300
    (c,) = pod["containers"]
    assert c["command"] == ["runbookd", "serve", "--config", "/etc/runbookd/config.yaml"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/var/lib/runbookd"] == "state" and mounts[RUNBOOKS_DIR] == "runbooks"
    assert mounts[SECRETS_DIR] == "secrets" and mounts["/tmp"] == "tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    (pvc,) = kinds["PersistentVolumeClaim"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "storageClassName" not in pvc["spec"], "the cluster's default class, not one cluster's name"
    assert _rendered_config(objs) == values["config"], "config.yaml is exactly values.config"
    maps = {m["metadata"]["name"]: m["data"] for m in kinds["ConfigMap"]}
    assert maps["runbookd-runbooks"] == {p.name: p.read_text() for p in (FILES / "runbooks").glob("*.yaml")}
    (role,) = kinds["ClusterRole"]
    assert role["rules"] == _yaml(FILES / "rbac-rules.yaml")
    (binding,) = kinds["ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "runbookd", "namespace": "monitoring"}]
    (service,) = kinds["Service"]
    assert service["metadata"]["name"] == "runbookd", "deploy/alertmanager/ routes to runbookd.monitoring"


def test_postgresql_renders_two_spread_replicas_rolling_with_a_pdb_and_no_volume() -> None:
    objs = helm_chart.render(CHART, VARIANTS["postgresql"])
    kinds = helm_chart.by_kind(objs)
    assert "PersistentVolumeClaim" not in kinds
    spec = _deployment(objs)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert "tolerations" not in pod, "the standby takes over: no need to leave a lost node early"
    assert "state" not in {v["name"] for v in pod["volumes"]}
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    config = _rendered_config(objs)
    assert config["state"] == {"url": PG_URL, "password": {"file": f"{SECRETS_DIR}/db-password"}}
    three = helm_chart.render(CHART, {**VARIANTS["postgresql"], "replicaCount": 3})
    assert _deployment(three)["spec"]["replicas"] == 3


def test_slack_ingress_exposes_only_the_slack_prefix() -> None:
    objs = helm_chart.render(CHART, VARIANTS["slack"])
    (ingress,) = helm_chart.by_kind(objs)["Ingress"]
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["runbookd.example.com"], "secretName": "tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "runbookd.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/slack/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "runbookd", "port": {"name": "http"}}


def test_s3_and_opensearch_ca_bundles_are_mounted_from_their_sources() -> None:
    for name, source in (
        ("s3", {"configMap": {"name": "minio-ca"}}),
        ("opensearch", {"secret": {"name": "opensearch-certs"}}),
    ):
        pod = _deployment(helm_chart.render(CHART, VARIANTS[name]))["spec"]["template"]["spec"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == "ca-bundles"]
        (src,) = vol["projected"]["sources"]
        (kind,) = src
        assert {kind: {"name": src[kind]["name"]}} == source
        ((item),) = src[kind]["items"]
        assert item["key"] == "ca.crt" and item["path"] == f"{'minio' if name == 's3' else 'opensearch'}.crt"


def test_network_policy_egress_names_dns_the_api_server_and_the_listed_destinations() -> None:
    objs = helm_chart.render(CHART, VARIANTS["networkpolicy"])
    (policy,) = helm_chart.by_kind(objs)["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    egress = spec["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
    assert {p["port"] for p in egress[1]["ports"]} == {443, 6443}
    destinations = [r.get("to") for r in egress[2:]]
    assert [{"ipBlock": {"cidr": "10.1.2.3/32"}}] in destinations
    assert [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "logging"}}}
    ] in destinations
    assert not any(d == [] for d in destinations), "an entry with no namespace or CIDR is left out"
    open_egress = helm_chart.render(CHART, {"networkPolicy": {"enabled": True}})
    (policy,) = helm_chart.by_kind(open_egress)["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]


def test_the_crd_check_refuses_a_field_the_operator_does_not_know() -> None:
    objs = helm_chart.render(CHART, VARIANTS["prometheus-operator"])
    (monitor,) = helm_chart.by_kind(objs)["ServiceMonitor"]
    assert helm_chart.crd_errors(monitor) == []
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "30s"
    assert helm_chart.crd_errors(monitor) == [
        "ServiceMonitor/runbookd: spec.endpoints.0.scrapeEvery: not in the CRD schema"
    ]


def test_prometheus_operator_objects_and_the_rule_groups_pass_promtool() -> None:
    objs = helm_chart.render(CHART, VARIANTS["prometheus-operator"])
    kinds = helm_chart.by_kind(objs)
    rules = {o["metadata"]["name"]: o["spec"] for o in kinds["PrometheusRule"]}
    assert rules == {f"runbookd-{p.stem}": _yaml(p) for p in (REPO / "rules").glob("*.yaml")}
    for name, spec in rules.items():
        assert "SUCCESS" in helm_chart.promtool_check(spec), name
    for o in kinds["PrometheusRule"]:
        assert o["apiVersion"] == "monitoring.coreos.com/v1" and o["metadata"]["labels"]["release"] == "kps"
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"] == _deployment(objs)["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert {"action": "replace", "targetLabel": "job", "replacement": "runbookd"} in endpoint["relabelings"]
    secrets = {s["metadata"]["name"]: s["stringData"] for s in kinds["Secret"]}
    assert secrets == {
        "runbookd-secrets": {"webhook-token": "w", "admin-token": "a"},
        "runbookd-webhook": {"token": "w"},
    }


def test_the_defaults_hold_no_one_clusters_names() -> None:
    text = (CHART / "values.yaml").read_text()
    for seed_name in ("thanos-query", "longhorn", "192.168.", "172.20.", "miribit", "minio123"):
        assert seed_name not in text, f"values.yaml names {seed_name}: move it to examples/seed-cluster.yaml"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"runbooks": {"extra": {"node-degradation.yaml": "name: x"}}},
            "a shipped runbook has that file name",
        ),
        (
            {"secret": {"existingSecret": "mine"}, "alertmanagerWebhookSecret": {"create": True}},
            "create that Secret yourself",
        ),
        ({"config": {"server": {"listen": "nonsense"}}}, "config.server.listen must be HOST:PORT"),
        ({"replicaCount": 2}, "the SQLite store has one writer"),
        (
            {"config": {"state": {"url": PG_URL, "password": {"file": f"{SECRETS_DIR}/db-password"}}}},
            "add key db-password",
        ),
        ({"ingress": {"enabled": True}}, "ingress.host"),
        ({"caBundles": {"x": {"key": "ca.crt"}}}, "caBundles.x: name a configMap or a secret"),
    ],
)
def test_helm_refuses_contradictory_values(overrides: dict[str, Any], message: str) -> None:
    assert message in helm_chart.render_error(CHART, overrides)
