"""The project's alert rules end to end (issue 3, part 4): from a metric to a run, with real components.

A real Prometheus loads a copy of ``rules/*.yaml`` in which only every ``for:`` is shortened (the copy is
checked to be otherwise identical and to pass ``promtool check rules``) and scrapes small test exporters on
loopback under the job names the rules select. A real Alertmanager runs the project's
``deploy/alertmanager/alertmanager.yaml`` with only the webhook URL, the credentials file and the
group_wait/group_interval timers replaced (checked the same way, and with ``amtool check-config``). It
delivers to ``runbookd serve`` (dry-run), whose ``/api/v1/alertmanager`` takes the token from that file.

Every wait polls with an upper bound; nothing asserts how long anything took.
"""

from __future__ import annotations

import copy
import secrets
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.am import AMTOOL_BIN, AlertmanagerServer
from support.polling import wait_until
from support.prom import PROMTOOL_BIN, MetricsExporter, PrometheusServer, values
from support.runbookd import RunbookdProcess, daemon_config

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = REPO_ROOT / "rules"
RUNBOOKS_DIR = REPO_ROOT / "runbooks"
AM_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yaml"

SHORT_FOR = "1s"  # every rule's `for:` in the test copy (production: 1m to 10m)
SHORT_GROUP_TIMER = "1s"  # Alertmanager group_wait and group_interval in the test copy
WAIT = 45.0  # upper bound of every poll; nothing here is timed

SCRAPE_JOB = "e2e-exporter"  # PrometheusScrapeFailure watches every job but runbookd
SIDECAR_JOB = "thanos-sidecar"  # ThanosSidecarUploadFailure selects job=~".*thanos-sidecar.*"
SIDECAR_TARGET_LABELS = {"namespace": "monitoring", "pod": "prometheus-k8s-0"}
BUCKET = "thanos"
SIDECAR_ALERT = "ThanosSidecarUploadFailure"


# --- helpers -------------------------------------------------------------------------------------------------


def runs(rb: RunbookdProcess) -> list[dict[str, Any]]:
    """Each listed run in full (the list holds summaries: no alert, params or plans)."""
    r = rb.get("/api/v1/runs")
    assert r.status == 200, r
    return [rb.get(f"/api/v1/runs/{listed['id']}").json() for listed in r.json()["runs"]]


def step(run: Mapping[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["id"] == step_id)


def waiting_at(rb: RunbookdProcess, run_id: str, step_id: str) -> dict[str, Any] | None:
    """The run, if its current step is ``step_id`` and awaits approval."""
    r = rb.get(f"/api/v1/runs/{run_id}")
    assert r.status == 200, r
    run: dict[str, Any] = r.json()
    if run["current_step"] == step_id and step(run, step_id)["state"] == "awaiting_approval":
        return run
    return None


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _run_ok(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, f"{' '.join(argv)} exited {res.returncode}\n{res.stdout}{res.stderr}"


def shortened_rules(dest: Path) -> list[Path]:
    """Copies of rules/*.yaml in ``dest`` with every ``for:`` set to SHORT_FOR and nothing else changed."""
    dest.mkdir(parents=True, exist_ok=True)
    copies: list[Path] = []
    shortened = 0
    for src in sorted(RULES_DIR.glob("*.yaml")):
        original = _load(src)
        short = copy.deepcopy(original)
        for group in short["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = SHORT_FOR
                    shortened += 1
        # The copy is the same rules: restoring the `for:` values gives back the original exactly
        # (expressions, labels, annotations, group names and intervals).
        restored = copy.deepcopy(short)
        for rg, og in zip(restored["groups"], original["groups"], strict=True):
            for rr, orule in zip(rg["rules"], og["rules"], strict=True):
                if "for" in orule:
                    rr["for"] = orule["for"]
        assert restored == original, f"the test copy of {src.name} changed more than `for:`"
        out = dest / src.name
        out.write_text(yaml.safe_dump(short, sort_keys=False))
        assert _load(out) == short
        copies.append(out)
    assert shortened > 0
    alerts = {r.get("alert") for p in copies for g in _load(p)["groups"] for r in g["rules"]}
    assert {"PrometheusScrapeFailure", SIDECAR_ALERT} <= alerts
    _run_ok([PROMTOOL_BIN, "check", "rules", "--lint-fatal", *map(str, copies)])
    return copies


def _runbookd_webhook(cfg: dict[str, Any]) -> dict[str, Any]:
    (receiver,) = [r for r in cfg["receivers"] if r["name"] == "runbookd"]
    (webhook,) = receiver["webhook_configs"]
    assert isinstance(webhook, dict)
    return webhook  # the same object: changing it changes cfg


def alertmanager_config(webhook_url: str, token_file: Path) -> str:
    """deploy/alertmanager/alertmanager.yaml with the runbookd webhook's URL and credentials file replaced
    and group_wait/group_interval shortened; nothing else changes (checked)."""
    original = _load(AM_CONFIG)
    cfg = copy.deepcopy(original)

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = SHORT_GROUP_TIMER
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    webhook = _runbookd_webhook(cfg)
    webhook["url"] = webhook_url
    auth = webhook["http_config"]["authorization"]
    assert auth.get("type") == "Bearer" and "credentials_file" in auth, auth
    auth["credentials_file"] = str(token_file)

    # Put the production values back: the rest of the file (routes, matchers, grouping, inhibition)
    # must be exactly the project's.
    restored = copy.deepcopy(cfg)

    def restore(route: dict[str, Any], orig: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in orig:
                route[key] = orig[key]
        for child, ochild in zip(route.get("routes", []), orig.get("routes", []), strict=True):
            restore(child, ochild)

    restore(restored["route"], original["route"])
    orig_webhook, rest_webhook = _runbookd_webhook(original), _runbookd_webhook(restored)
    rest_webhook["url"] = orig_webhook["url"]
    orig_auth, rest_auth = (
        orig_webhook["http_config"]["authorization"],
        rest_webhook["http_config"]["authorization"],
    )
    rest_auth["credentials_file"] = orig_auth["credentials_file"]
    assert restored == original, "the test copy of alertmanager.yaml changed more than URL, token and timers"

    text = yaml.safe_dump(cfg, sort_keys=False)
    checked = token_file.parent / "alertmanager.yaml"
    checked.write_text(text)
    _run_ok([AMTOOL_BIN, "check-config", str(checked)])
    return text


@dataclass
class Stack:
    prom: PrometheusServer
    am: AlertmanagerServer
    rb: RunbookdProcess


@pytest.fixture
def stack(
    tmp_path: Path,
    prometheus_factory: Callable[..., PrometheusServer],
    alertmanager_factory: Callable[..., AlertmanagerServer],
    runbookd_factory: Callable[..., RunbookdProcess],
) -> Callable[..., Stack]:
    """``stack(scrape_configs, runbooks_path)``: Alertmanager, Prometheus with the shortened rules, runbookd,
    then Alertmanager switched to the project's routing pointed at that runbookd."""

    def make(scrape_configs: list[dict[str, Any]], runbooks_path: Path) -> Stack:
        rule_files = shortened_rules(tmp_path / "rules-short-for")
        am = alertmanager_factory()  # a receiver with no integrations until runbookd's URL is known
        prom = prometheus_factory(
            rule_files=rule_files, scrape_configs=scrape_configs, alertmanagers=[am.url]
        )
        token = secrets.token_hex(16)
        rb = runbookd_factory(
            daemon_config(runbooks_path, prometheus=prom.url, alertmanager=am.url, dry_run=True),
            webhook_token=token,
        )
        secret_dir = tmp_path / "alertmanager-secrets"
        secret_dir.mkdir()
        token_file = secret_dir / "runbookd-webhook-token"
        token_file.write_text(token)
        am.set_config(alertmanager_config(rb.url + "/api/v1/alertmanager", token_file))
        return Stack(prom, am, rb)

    return make


class UploadFailingSidecar(MetricsExporter):
    """A Thanos sidecar whose block uploads keep failing: on every scrape one more upload, and its failure,
    plus a successful `exists` and `iter`. So 1 in 3 bucket calls fails: ThanosSidecarUploadFailure's
    `increase(...failures...) > 0` holds, and S3ConnectivityLoss (failure ratio >= 0.9, which would
    inhibit the sidecar alert) stays quiet."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0

    def render(self) -> str:
        self.syncs += 1
        n = float(self.syncs)
        for op in ("exists", "iter", "upload"):
            self.set(
                "thanos_objstore_bucket_operations_total",
                n,
                {"bucket": BUCKET, "operation": op},
                type="counter",
            )
        self.set(
            "thanos_objstore_bucket_operation_failures_total",
            n,
            {"bucket": BUCKET, "operation": "upload"},
            type="counter",
        )
        return super().render()


@pytest.fixture
def sidecar() -> Iterator[UploadFailingSidecar]:
    exp = UploadFailingSidecar()
    exp.start()
    yield exp
    exp.close()


def sidecar_scrape_config(exp: MetricsExporter) -> dict[str, Any]:
    # namespace/pod as target labels, as Kubernetes service discovery would set them
    return {
        "job_name": SIDECAR_JOB,
        "static_configs": [{"targets": [exp.target], "labels": dict(SIDECAR_TARGET_LABELS)}],
    }


def runbooks_answering(alertname: str, folder: Path) -> set[str]:
    """Names of the runbooks in ``folder`` with a trigger on ``alertname``."""
    names = set()
    for path in sorted(folder.glob("*.y*ml")):
        doc = _load(path)
        if any(t.get("alert") == alertname for t in doc.get("triggers", [])):
            names.add(doc["name"])
    return names


def sidecar_alert_reaches_runbookd(s: Stack) -> dict[str, Any]:
    """Wait for ThanosSidecarUploadFailure to fire in Prometheus and be answered 200 by runbookd's webhook;
    return the Prometheus alert."""
    firing0 = s.rb.metric("runbookd_alerts_received_total", status="firing")
    ok0 = s.rb.metric("runbookd_webhook_responses_total", code="200")
    s.prom.wait_for(
        f'increase(thanos_objstore_bucket_operation_failures_total{{job="{SIDECAR_JOB}"}}[5m])',
        lambda r: bool(r) and values(r)[0] > 0,
        timeout=WAIT,
    )
    alert = s.prom.wait_for_alert(SIDECAR_ALERT, timeout=WAIT)
    assert alert["labels"] == {
        "alertname": SIDECAR_ALERT,
        "bucket": BUCKET,
        **SIDECAR_TARGET_LABELS,
        "severity": "warning",
        "component": "thanos",
    }
    assert alert["annotations"]["runbook"] == "thanos-sidecar-upload-failure"
    assert "monitoring/prometheus-k8s-0" in alert["annotations"]["summary"]

    wait_until(
        "runbookd's webhook to count the firing alert and answer 200",
        lambda: (
            s.rb.metric("runbookd_alerts_received_total", status="firing") > firing0
            and s.rb.metric("runbookd_webhook_responses_total", code="200") > ok0
        ),
    )
    assert s.rb.metric("runbookd_webhook_responses_total", code="401") == 0

    # What runbookd counted is this alert: it is the only active alert Alertmanager routes to runbookd
    # (the S3 alert, which would inhibit it, is not firing).
    routed = {
        a["labels"]["alertname"]
        for a in s.am.alerts()
        if any(r["name"] == "runbookd" for r in a["receivers"])
    }
    assert routed == {SIDECAR_ALERT}, routed
    assert not [a for a in s.prom.alerts() if a["labels"]["alertname"] == "S3ConnectivityLoss"]
    return alert


# --- the cases -----------------------------------------------------------------------------------------------


def test_scrape_failure_fires_and_a_run_awaits_approval_for_the_job(
    stack: Callable[..., Stack], test_exporter: MetricsExporter
) -> None:
    test_exporter.set("e2e_exporter_info", 1)
    s = stack(
        [{"job_name": SCRAPE_JOB, "static_configs": [{"targets": [test_exporter.target]}]}], RUNBOOKS_DIR
    )
    s.prom.wait_for(f'up{{job="{SCRAPE_JOB}"}}', lambda r: values(r) == [1.0], timeout=WAIT)
    assert runs(s.rb) == []

    test_exporter.stop()  # the target stops answering: up becomes 0
    alert = s.prom.wait_for_alert("PrometheusScrapeFailure", timeout=WAIT)
    assert alert["labels"] == {
        "alertname": "PrometheusScrapeFailure",
        "job": SCRAPE_JOB,
        "instance": test_exporter.target,
        "severity": "warning",
        "component": "prometheus",
    }

    (run,) = wait_until(
        "Alertmanager to deliver PrometheusScrapeFailure and runbookd to start a run",
        lambda: [
            r
            for r in runs(s.rb)
            if r["runbook"] == "prometheus-scrape-failure" and r["state"] == "awaiting_approval"
        ],
    )
    assert run["trigger"] == "alert" and run["dry_run"] is True
    assert run["target"] == f"{SCRAPE_JOB}/{test_exporter.target}"
    assert run["params"]["job"] == SCRAPE_JOB and run["params"]["instance"] == test_exporter.target
    assert run["alert"]["labels"] == alert["labels"]
    assert run["alert"]["annotations"]["runbook"] == "prometheus-scrape-failure"
    assert run["current_step"] == "target-down"
    assert step(run, "target-down")["plan"]["query"] == (
        f'up{{job="{SCRAPE_JOB}", instance="{test_exporter.target}"}} == 0'
    )
    assert s.rb.metric("runbookd_alerts_received_total", status="firing") >= 1
    assert s.rb.metric("runbookd_webhook_responses_total", code="200") >= 1
    assert s.rb.metric("runbookd_webhook_responses_total", code="401") == 0

    # The silence step is planned when the run reaches it: approve the read-only steps (they run
    # against the real Prometheus, dry-run or not) and read its rendered matchers.
    run_id = run["id"]
    for step_id in ("target-down", "scrape-error", "down-since", "others-down", "report"):
        cur = wait_until(f"step {step_id} to await approval", partial(waiting_at, s.rb, run_id, step_id))
        resp = s.rb.post(
            f"/api/v1/runs/{run_id}/steps/{step_id}/approve",
            json={"plan_hash": step(cur, step_id)["plan_hash"]},
        )
        assert resp.status == 200, resp

    run = wait_until("the silence step to await approval", lambda: waiting_at(s.rb, run_id, "silence-target"))
    assert run["state"] == "awaiting_approval"
    down = step(run, "target-down")
    assert down["state"] == "succeeded", down
    assert [(x["labels"]["job"], x["labels"]["instance"]) for x in down["output"]["result"]] == [
        (SCRAPE_JOB, test_exporter.target)
    ]
    silence = step(run, "silence-target")
    assert silence["state"] == "awaiting_approval" and silence["mutating"] is True
    matchers = silence["plan"]["matchers"]
    assert {"name": "job", "value": SCRAPE_JOB, "is_regex": False, "is_equal": True} in matchers, matchers
    instance = {"name": "instance", "value": test_exporter.target, "is_regex": False, "is_equal": True}
    assert instance in matchers, matchers
    assert silence["undo"]["action"] == "alertmanager.expire_silence"
    assert {
        "name": "alertname",
        "value": "PrometheusScrapeFailure",
        "is_regex": False,
        "is_equal": False,
    } in matchers, matchers
    assert SCRAPE_JOB in silence["plan"]["comment"]
    assert s.am.silences() == []  # dry-run, and not approved: nothing was silenced


def test_sidecar_upload_failure_reaches_the_webhook_and_only_answering_runbooks_start_runs(
    stack: Callable[..., Stack], sidecar: UploadFailingSidecar
) -> None:
    s = stack([sidecar_scrape_config(sidecar)], RUNBOOKS_DIR)
    sidecar_alert_reaches_runbookd(s)

    # runbookd creates runs in the same transaction that stores the alerts, before it answers 200: the
    # runs it will ever start for this notification exist now.
    expected = runbooks_answering(SIDECAR_ALERT, RUNBOOKS_DIR)  # none in runbooks/ yet
    started = {
        r["runbook"]
        for r in runs(s.rb)
        if (r["alert"] or {}).get("labels", {}).get("alertname") == SIDECAR_ALERT
    }
    assert started == expected
    assert s.rb.metric("runbookd_runs_started_total", runbook="prometheus-scrape-failure") == 0


E2E_SIDECAR_RUNBOOK = """\
# Written by tests/test_e2e_rules.py: a stand-in runbook answering ThanosSidecarUploadFailure.
name: e2e-thanos-sidecar-upload
triggers:
  - alert: ThanosSidecarUploadFailure
target: "{{ params.namespace }}/{{ params.pod }}"
params:
  namespace: "{{ alert.labels.namespace }}"
  pod: "{{ alert.labels.pod }}"
  bucket: "{{ alert.labels.bucket }}"
steps:
  - id: failures
    action: prometheus.query
    with:
      query: 'sum by (bucket) (increase(thanos_objstore_bucket_operation_failures_total{namespace="{{ params.namespace | promql }}", pod="{{ params.pod | promql }}"}[5m])) > 0'
      expect: non_empty
"""


def test_sidecar_upload_failure_starts_a_run_once_a_runbook_answers_it(
    tmp_path: Path, stack: Callable[..., Stack], sidecar: UploadFailingSidecar
) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "e2e-thanos-sidecar-upload.yaml").write_text(E2E_SIDECAR_RUNBOOK)
    s = stack([sidecar_scrape_config(sidecar)], folder)
    alert = sidecar_alert_reaches_runbookd(s)

    (run,) = wait_until(
        "a run of the stand-in runbook",
        lambda: [r for r in runs(s.rb) if r["runbook"] == "e2e-thanos-sidecar-upload"],
    )
    assert run["state"] == "awaiting_approval" and run["trigger"] == "alert" and run["dry_run"] is True
    assert run["target"] == "monitoring/prometheus-k8s-0"
    assert run["params"] == {"namespace": "monitoring", "pod": "prometheus-k8s-0", "bucket": BUCKET}
    assert run["alert"]["labels"] == alert["labels"]
    assert run["current_step"] == "failures"
    assert 'pod="prometheus-k8s-0"' in step(run, "failures")["plan"]["query"]
    assert s.rb.metric("runbookd_runs_started_total", runbook="e2e-thanos-sidecar-upload") == 1
