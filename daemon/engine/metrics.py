"""runbookd's own metrics, in a registry owned by one daemon instance (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from daemon.store.records import RunState


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.alerts_received = Counter(
            "runbookd_alerts_received", "Alerts received on the webhook, by status.", ["status"], registry=r
        )
        self.runs = Counter(
            "runbookd_runs", "Runs ended, by runbook and outcome.", ["runbook", "outcome"], registry=r
        )
        self.runs_started = Counter(
            "runbookd_runs_started", "Runs started, by runbook.", ["runbook"], registry=r
        )
        self.runs_suppressed = Counter(
            "runbookd_runs_suppressed",
            "Alerts that matched a runbook but started no run (cooldown, daily limit, render error).",
            ["runbook", "reason"],
            registry=r,
        )
        self.runs_active = Gauge(
            "runbookd_runs_active", "Runs not yet ended, by state.", ["state"], registry=r
        )
        self.approval_wait = Histogram(
            "runbookd_approval_wait_seconds",
            "Time from an approval request to the step's approval.",
            ["runbook"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.step_duration = Histogram(
            "runbookd_step_duration_seconds",
            "Action execution time, by action and outcome.",
            ["action", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
            registry=r,
        )
        self.webhook_responses = Counter(
            "runbookd_webhook_responses", "Alertmanager webhook answers, by HTTP code.", ["code"], registry=r
        )
        self.oldest_pending_approval = Gauge(
            "runbookd_oldest_pending_approval_seconds",
            "Age of the oldest step awaiting approval (0 when none).",
            registry=r,
        )
        self.paused = Gauge("runbookd_paused", "1 while new steps are paused (kill switch).", registry=r)
        self.notifications_failed = Counter(
            "runbookd_notifications_failed",
            "Notifications that could not be delivered.",
            ["notifier"],
            registry=r,
        )
        self.runbooks_loaded = Gauge("runbookd_runbooks_loaded", "Runbooks loaded.", registry=r)
        self.leader = Gauge(
            "runbookd_leader",
            "1 on the replica that routes, plans, executes and notifies (always 1 with SQLite).",
            registry=r,
        )
        self.check_last_fire = Gauge(
            "runbookd_check_last_fire_timestamp_seconds",
            "Fire time of the last recorded result of a runbook's scheduled check.",
            ["runbook"],
            registry=r,
        )
        self.check_outcomes = Counter(
            "runbookd_check_outcomes",
            "Scheduled check results, by runbook and outcome (ok: nothing to do, work: a run is due, "
            "error: the check could not look).",
            ["runbook", "outcome"],
            registry=r,
        )
        self.check_last_outcome = Gauge(
            "runbookd_check_last_outcome",
            "1 for the outcome of a runbook's scheduled check's last recorded result, 0 for the others.",
            ["runbook", "outcome"],
            registry=r,
        )
        self.check_findings = Gauge(
            "runbookd_check_findings",
            "Items needing action that a runbook's scheduled check reported last time.",
            ["runbook"],
            registry=r,
        )
        self.routing_live = Gauge(
            "runbookd_routing_live",
            "1 once this replica leads, has recovered interrupted runs and routes notifications; 0 while"
            " the webhook only stores them (start-up, follower).",
            registry=r,
        )
        # children of the hot-path counters, looked up once (labels() takes a lock and hashes each time)
        self._received = {s: self.alerts_received.labels(status=s) for s in ("firing", "resolved")}
        self._responses: dict[int, Counter] = {}

    def count_received(self, firing: int, resolved: int) -> None:
        if firing:
            self._received["firing"].inc(firing)
        if resolved:
            self._received["resolved"].inc(resolved)

    def count_response(self, code: int) -> None:
        child = self._responses.get(code)
        if child is None:
            child = self._responses[code] = self.webhook_responses.labels(code=str(code))
        child.inc()

    def preset(self, runbooks: list[str]) -> None:
        """Create the known series at 0, so alert rules using rate()/increase() see the first event."""
        for code in ("200", "400", "401", "413", "503"):
            self.webhook_responses.labels(code=code)
        for status in ("firing", "resolved"):
            self.alerts_received.labels(status=status)
        for name in runbooks:
            self.runs_started.labels(runbook=name)
            for state in RunState:
                if not state.active:
                    self.runs.labels(runbook=name, outcome=state.value)
        self.set_active({})

    def set_active(self, counts: dict[str, int]) -> None:
        for state in RunState:
            if state.active:
                self.runs_active.labels(state=state.value).set(counts.get(state.value, 0))
