"""The alert rules in rules/ and the Alertmanager routing in deploy/alertmanager/, checked with the
real promtool and amtool (Debian's prometheus and prometheus-alertmanager packages).

The promtool unit tests in rules/tests/ hold the behaviour of each expression; this module runs
them and checks what they cannot see: every alert documented, annotated, unit-tested both ways,
routed to the receiver its runbook annotation promises, and the operator's AlertmanagerConfig in
step with the plain configuration. Without the binaries the tool tests skip and say why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yaml"
AM_OPERATOR_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanagerconfig.yaml"
WEBHOOK_URL = "http://runbookd.monitoring:8080/api/v1/alertmanager"
NO_RUNBOOK = "none (page a human)"

# The contract between rules and runbooks: which runbook answers which alert.
EXPECTED_RUNBOOKS = {
    "S3ConnectivityLoss": "s3-connectivity-loss",
    "ThanosSidecarUploadFailure": "thanos-sidecar-upload-failure",
    "PrometheusScrapeFailure": "prometheus-scrape-failure",
    "DiskPressureWarning": "pvc-disk-pressure",
    "NodeDegraded": "node-degradation",
    "ControlPlaneQuorumAtRisk": NO_RUNBOOK,
    "RunbookdDown": NO_RUNBOOK,
    "RunbookdApprovalWaitingTooLong": NO_RUNBOOK,
    "RunbookdRunNeedsAttention": NO_RUNBOOK,
    "RunbookdWebhookErrors": NO_RUNBOOK,
    "RunbookdRunsFailingRepeatedly": NO_RUNBOOK,
    "RunbookdCheckFailing": NO_RUNBOOK,
    "RunbookdCheckWorkPiling": NO_RUNBOOK,
    "LonghornBackupStuck": NO_RUNBOOK,
    "LonghornBackupError": NO_RUNBOOK,
}
# Labels that name a target; grouping by all of them keeps one target per notification.
TARGET_LABELS = {"namespace", "pod", "node", "persistentvolumeclaim", "job", "instance"}
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _rule_files() -> list[Path]:
    files = sorted(RULES_DIR.glob("*.yaml"))
    assert files, f"no rule files in {RULES_DIR}"
    return files


def _rule_test_files() -> list[Path]:
    files = sorted((RULES_DIR / "tests").glob("*.yaml"))
    assert files, f"no promtool test files in {RULES_DIR / 'tests'}"
    return files


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _alerting_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in _rule_files()
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _seconds(duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a Prometheus duration: {duration!r}"
    return sum(int(n) * DURATION_UNITS[u] for n, u in parts)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian packages prometheus / prometheus-alertmanager)")
    return path


def _run_ok(argv: list[str]) -> str:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def _runbookd_route(config: dict[str, Any]) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        r for r in config["route"].get("routes", []) if r.get("receiver") == "runbookd"
    ]
    assert len(routes) == 1, "expected exactly one route to the runbookd receiver"
    return routes[0]


def _alertname_regex(route: dict[str, Any]) -> str:
    found = [m for m in route.get("matchers", []) if m.startswith("alertname=~")]
    assert len(found) == 1, f"expected one alertname=~ matcher, got {route.get('matchers')}"
    match = re.fullmatch(r'alertname=~"([^"]*)"', found[0])
    assert match, found[0]
    return match.group(1)


# --- the real tools -------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    """Valid rule files, and no lint findings (duplicate rules) either."""
    promtool = _tool("promtool")
    _run_ok([promtool, "check", "rules", "--lint-fatal", *map(str, _rule_files())])


def test_promtool_unit_tests() -> None:
    """Every series that must fire does, with exact labels and annotations; the rest stay quiet."""
    promtool = _tool("promtool")
    _run_ok([promtool, "test", "rules", *map(str, _rule_test_files())])


def test_amtool_check_config() -> None:
    amtool = _tool("amtool")
    _run_ok([amtool, "check-config", str(AM_CONFIG)])


@pytest.mark.parametrize("alertname", sorted(EXPECTED_RUNBOOKS))
def test_alert_reaches_runbookd_exactly_when_a_runbook_answers_it(alertname: str) -> None:
    """Resolved with Alertmanager's own routing code: runbook alerts go to runbookd and people,
    the others to people only (runbookd's own alerts must never depend on runbookd)."""
    amtool = _tool("amtool")
    expected = "oncall" if EXPECTED_RUNBOOKS[alertname] == NO_RUNBOOK else "runbookd,oncall"
    _run_ok(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={AM_CONFIG}",
            f"--verify.receivers={expected}",
            f"alertname={alertname}",
        ]
    )


# --- what the tools cannot see --------------------------------------------------------------


def test_rules_define_exactly_the_expected_alerts() -> None:
    assert {rule["alert"] for rule in _alerting_rules()} == set(EXPECTED_RUNBOOKS)


@pytest.mark.parametrize("rule", _alerting_rules(), ids=lambda rule: rule["alert"])
def test_alert_carries_severity_annotations_and_runbook(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        assert annotations.get(key), f"{name}: missing annotation {key}"
    assert annotations["runbook"] == EXPECTED_RUNBOOKS[name]
    assert _seconds(rule.get("for", "0s")) >= 60, f"{name}: for: must be at least 1m (flapping)"


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """For each alert, at least one promtool case expects it to fire (with exact annotations) and
    at least one expects silence."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in _rule_test_files():
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                alerts = check.get("exp_alerts") or []
                (fires if alerts else quiet).add(check["alertname"])
                for alert in alerts:
                    assert alert.get("exp_annotations"), (
                        f"{path.name}: {check['alertname']} without annotations"
                    )
    assert set(EXPECTED_RUNBOOKS) - fires == set(), "alerts never tested firing"
    assert set(EXPECTED_RUNBOOKS) - quiet == set(), "alerts never tested quiet"


def test_readme_documents_every_alert_and_its_runbook() -> None:
    rows = [
        line
        for line in (RULES_DIR / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ")
    ]
    for alertname, runbook in EXPECTED_RUNBOOKS.items():
        mine = [row for row in rows if row.startswith(f"| {alertname} ")]
        assert mine, f"rules/README.md has no table row for {alertname}"
        for row in mine:
            assert row.rstrip(" |").endswith(f"`{runbook}`" if runbook != NO_RUNBOOK else runbook), row


def test_runbookd_receiver_uses_bearer_file_and_sends_resolved() -> None:
    config = _load(AM_CONFIG)
    (receiver,) = [r for r in config["receivers"] if r["name"] == "runbookd"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == WEBHOOK_URL
    assert webhook["send_resolved"] is True
    auth = webhook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert "credentials" not in auth, "the example must not carry the token inline"
    assert auth["credentials_file"].startswith("/")


def test_grouping_keeps_one_target_per_notification() -> None:
    config = _load(AM_CONFIG)
    group_by = set(_runbookd_route(config).get("group_by", config["route"]["group_by"]))
    assert {"alertname", *TARGET_LABELS} <= group_by
    assert "..." not in group_by


def test_operator_config_matches_the_plain_config() -> None:
    plain = _load(AM_CONFIG)
    plain_route = _runbookd_route(plain)
    operator = _load(AM_OPERATOR_CONFIG)
    assert operator["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert operator["kind"] == "AlertmanagerConfig"
    spec = operator["spec"]
    route = spec["route"]
    assert route["receiver"] == "runbookd"
    assert route["matchers"] == [
        {"name": "alertname", "matchType": "=~", "value": _alertname_regex(plain_route)}
    ]
    assert route["groupBy"] == plain_route.get("group_by", plain["route"]["group_by"])
    (receiver,) = spec["receivers"]
    (webhook,) = receiver["webhookConfigs"]
    assert webhook["url"] == WEBHOOK_URL
    assert webhook["sendResolved"] is True
    auth = webhook["httpConfig"]["authorization"]
    assert auth["type"] == "Bearer"
    assert set(auth["credentials"]) == {"name", "key"}
    (plain_inhibit,) = plain["inhibit_rules"]
    (inhibit,) = spec["inhibitRules"]
    assert inhibit["equal"] == plain_inhibit["equal"]
    for ours, theirs in (("sourceMatch", "source_matchers"), ("targetMatch", "target_matchers")):
        assert [f'{m["name"]}{m["matchType"]}"{m["value"]}"' for m in inhibit[ours]] == plain_inhibit[theirs]
