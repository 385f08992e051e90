"""The configuration file, loaded once into nested pydantic models and passed explicitly.

Secrets are never written in the file itself: each is ``{env: NAME}`` or ``{file: /path}``, resolved at
load time into ``SecretStr`` so that they never appear in a repr, a log line or an API answer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.errors import ConfigError
from daemon.kits.durations import Duration
from daemon.kits.quantities import StorageQuantity

Role = Literal["viewer", "approver", "admin"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret lives: an environment variable or a file (Kubernetes Secret mount)."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env: or file:")
        return self

    def resolve(self) -> SecretStr:
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set or empty")
            return SecretStr(value)
        assert self.file is not None
        try:
            value = self.file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from None
        if not value:
            raise ValueError(f"secret file {self.file} is empty")
        return SecretStr(value)


class ServerConfig(_Model):
    listen: str = "0.0.0.0:8080"
    """HOST:PORT the HTTP server binds."""
    max_body_bytes: int = 1_048_576
    """Largest request body accepted (webhook, API); larger answers 413."""
    public_url: str | None = None
    """How operators reach this server (for links in messages); unset, messages carry no link."""
    shutdown_grace: Duration = 10.0
    """On SIGTERM, how long running steps may go on before they are cancelled (and recovered on the
    next start). Keep it below the pod's terminationGracePeriodSeconds."""
    body_timeout: Duration = 10.0
    """Longest a client may take to send a request body once its headers are in; slower answers 408.
    Alertmanager and Slack send theirs in milliseconds; this only bounds slow or stalled clients."""
    max_pending_bodies: int = Field(default=128, ge=1)
    """Request bodies read at once; more answer 503 at once (Alertmanager retries) instead of holding
    memory and sockets for clients that send slowly or not at all."""
    drain_timeout: Duration = 5.0
    """On SIGTERM, how long requests already being handled may take to finish before their connections
    are closed (bodies still being received are given up at once)."""
    idle_timeout: Duration = 75.0
    """A connection that has not sent a whole request (idle keep-alive, or headers that never end) is
    closed after this long. aiohttp's own default is an hour, so a client trickling headers held a
    socket that long."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("listen must be HOST:PORT, for example 0.0.0.0:8080")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StateConfig(_Model):
    path: Path = Path("/var/lib/runbookd/state.db")
    """SQLite database file (WAL mode); its folder is created if missing."""
    busy_timeout: Duration = 5.0
    """How long a write waits for a lock before the store counts as unavailable (webhook answers 503)."""
    url: str | None = None
    """``postgresql://USER@HOST:PORT/DB``: the PostgreSQL store (production, several replicas) instead of
    the SQLite file at ``path``. No password in the URL: give it in ``password``."""
    password: SecretRef | None = None
    """The PostgreSQL password, from the environment or a file (a Kubernetes Secret)."""
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    """libpq's TLS mode; ``verify-full`` with ``ca_file`` outside a trusted network."""
    ca_file: Path | None = None
    """CA bundle that signed the server certificate (libpq ``sslrootcert``)."""
    connect_timeout: Duration = 5.0
    """Longest wait for a connection to PostgreSQL."""

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("must be postgresql://USER@HOST:PORT/DATABASE")
        if parts.password:
            raise ValueError(
                "must not contain a password: give it as state.password ({env: ...} or {file: ...})"
            )
        return v


class HaConfig(_Model):
    """Leadership among replicas sharing a PostgreSQL store (SQLite: one process, always the leader)."""

    lease: Duration = 15.0
    """How long a leader's lease lasts without renewal; a standby takes over once it expired (DB clock)."""
    renew: Duration = 5.0
    """How often the leader renews its lease (and a standby tries to take it)."""

    @model_validator(mode="after")
    def _renew_within_lease(self) -> HaConfig:
        if not 0 < self.renew * 2 <= self.lease:
            raise ValueError("ha.renew must be positive and at most half of ha.lease")
        return self


class RunbooksConfig(_Model):
    paths: list[Path] = Field(default_factory=lambda: [Path("./runbooks")])
    """Folders (or single files) of runbook YAML files."""


def _http_url_parts(v: str, *, not_http: str, credentials: str) -> SplitResult:
    """An http(s) URL with a host and no user:password@ in it (it would surface wherever the URL does)."""
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(not_http)
    if parts.username or parts.password:
        raise ValueError(credentials)
    return parts


class HttpServiceConfig(_Model):
    url: str
    """Base URL, for example http://thanos-query.monitoring:9090."""
    timeout: Duration = 10.0
    """Per-request timeout."""
    bearer_token: SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, v: str) -> str:
        # credentials in it would be shown in dry-run requests, the API and Slack: use bearer_token instead
        _http_url_parts(
            v,
            not_http="must be an http(s) URL, for example http://thanos-query.monitoring:9090",
            credentials="must not carry credentials (user:password@); use bearer_token: {env|file}",
        )
        return v


class TokenConfig(_Model):
    name: str
    role: Role
    secret: SecretRef


class AuthConfig(_Model):
    webhook_token: SecretRef | None = None
    """Bearer token Alertmanager sends (http_config.authorization.credentials). Required unless
    allow_unauthenticated_webhook is set."""
    allow_unauthenticated_webhook: bool = False
    tokens: list[TokenConfig] = Field(default_factory=list)

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, v: list[TokenConfig]) -> list[TokenConfig]:
        names = [t.name for t in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate token names: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _webhook_protected(self) -> AuthConfig:
        if self.webhook_token is None and not self.allow_unauthenticated_webhook:
            raise ValueError("set webhook_token (or allow_unauthenticated_webhook: true, not recommended)")
        return self


class SlackConfig(_Model):
    enabled: bool = True
    bot_token: SecretRef
    signing_secret: SecretRef
    api_url: str = "https://slack.com/api/"
    channel: str = "#ops-approvals"
    """Default channel for approval requests; a runbook may name its own."""
    channels: dict[str, str] = Field(default_factory=dict)
    """Per-runbook channel overrides: {runbook name: channel}."""
    reminder_before: Duration | None = None
    """Post a reminder in the run's thread this long before an approval deadline."""
    timeout: Duration = 10.0


class KubernetesConfig(_Model):
    """How runbookd reaches the Kubernetes API. With neither ``kubeconfig`` nor ``host``: the pod's own
    service account (in-cluster configuration)."""

    kubeconfig: Path | None = None
    """A kubeconfig file, for running outside the cluster."""
    context: str | None = None
    """The kubeconfig context to use; its current-context when unset."""
    host: str | None = None
    """An API URL used as-is, without credentials (``kubectl proxy``, tests)."""
    timeout: Duration = 10.0
    """Seconds for one attempt of one API call."""
    retries: int = Field(3, ge=0, le=10)
    """Further attempts after a 429, 5xx, timeout or connection error, with exponential backoff."""
    max_pvc_size: StorageQuantity | None = None
    """Ceiling for kubernetes.expand_pvc (e.g. 500Gi), whatever a runbook's max_size says."""
    longhorn_namespace: str = Field("longhorn-system", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    """Where Longhorn's custom resources (longhorn.io/v1beta2 Volume, Backup, ...) live."""

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesConfig:
        if self.kubeconfig is not None and self.host is not None:
            raise ValueError("give kubeconfig or host, not both")
        return self


class S3Config(_Model):
    """How runbookd reaches S3-compatible object storage (MinIO in the seed) for the ``s3.*`` and
    ``thanos.*`` actions. Without this section those actions fail their step with "s3 is not
    configured"; runbooks using them still validate."""

    endpoint_url: str
    """Base URL of the S3 API, for example https://minio.minio:9000 (no path, no credentials)."""
    region: str = "us-east-1"
    """Signing region; MinIO accepts its default, us-east-1."""
    access_key: SecretRef | None = None
    secret_key: SecretRef | None = None
    """Both or neither. With neither, botocore's own credential chain is used (AWS_* variables, web
    identity), which is rarely what a MinIO deployment wants."""
    verify_tls: bool = True
    """Verify the server's certificate. The seed's MinIO has a self-signed one: prefer ``ca_bundle``
    over turning this off."""
    ca_bundle: Path | None = None
    """PEM file of the CA that signed the server's certificate (a mounted Secret or ConfigMap)."""
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    """MinIO needs path-style addressing (http://host/bucket/key)."""
    connect_timeout: Duration = 5.0
    """Seconds to open a connection, per attempt."""
    timeout: Duration = 15.0
    """Seconds to wait for a response (each read), per attempt."""
    retries: int = Field(2, ge=0, le=10)
    """Further attempts after a timeout, a connection error, a throttle or a 5xx (botocore's standard
    retry mode: exponential backoff with jitter)."""
    max_concurrency: int = Field(32, ge=1, le=256)
    """Requests in flight at once when an action reads many objects (Thanos meta.json files); also
    the size of the connection pool."""
    meta_cache_entries: int = Field(200_000, ge=0, le=2_000_000)
    """Parsed Thanos meta.json files kept in memory between scans (blocks are immutable, so a cached
    one never goes stale; a block gone from the bucket is dropped from the cache at the next scan).
    About 350 bytes each (35 MB for 100,000 blocks). 0 reads every meta.json on every scan."""

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = _http_url_parts(
            v,
            not_http="endpoint_url must be http(s)://host[:port]",
            credentials="endpoint_url must not carry credentials: use access_key and secret_key",
        )
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("endpoint_url must not have a path or query (buckets are named by the actions)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> S3Config:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError(
                "ca_bundle is for verifying the certificate: do not set verify_tls: false with it"
            )
        return self


class OpenSearchConfig(_Model):
    """How runbookd reaches OpenSearch for the ``opensearch.*`` actions. Without this section those
    actions fail their step with "opensearch is not configured"; runbooks using them still validate."""

    url: str
    """Base URL, http(s)://host:port (no path, no credentials), for example
    https://opensearch.logging:9200."""
    username: SecretRef | None = None
    password: SecretRef | None = None
    """HTTP basic auth (the security plugin's internal users): both or neither."""
    token: SecretRef | None = None
    """A bearer token (JWT / OpenID Connect auth domain) instead of username and password."""
    verify_tls: bool = True
    """Verify the server's certificate. Prefer ``ca_bundle`` over turning this off."""
    ca_bundle: Path | None = None
    """PEM file of the CA that signed the server's certificate (the security plugin's demo or own CA)."""
    timeout: Duration = 30.0
    """Seconds for one attempt of one request."""
    retries: int = Field(3, ge=0, le=10)
    """Further attempts after a 429, 502/503/504, timeout or connection error, with exponential backoff
    (Retry-After honoured)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = _http_url_parts(
            v,
            not_http="url must be http(s)://host:port, for example https://opensearch.logging:9200",
            credentials="url must not carry credentials: use username/password or token",
        )
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("url must not have a path or query (http(s)://host:port)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> OpenSearchConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.token is not None and self.username is not None:
            raise ValueError("give username and password, or token, not both")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError(
                "ca_bundle is for verifying the certificate: do not set verify_tls: false with it"
            )
        return self


class LimitsConfig(_Model):
    max_concurrent_mutating_steps: int = Field(1, ge=1)
    """Blast-radius budget: mutating steps running at once, cluster-wide."""
    max_unavailable_nodes: int = Field(1, ge=0)
    """Node actions refuse to leave more nodes than this NotReady or unschedulable."""
    action_timeout: Duration = 600.0
    """Upper bound on any one action when the step gives no timeout."""


class ApprovalConfig(_Model):
    auto_approve_read_only: bool = False
    """Run read-only steps without a click. Mutating steps always need a person."""
    default_timeout: Duration = 1800.0
    """How long a step waits for approval when the runbook does not say."""


class LogConfig(_Model):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Model):
    plugins: list[str] = Field(default_factory=list)
    """Python modules exporting ``ACTIONS`` (lists of actions) to add to the built-in ones."""
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    runbooks: RunbooksConfig = RunbooksConfig()
    dry_run: bool = False
    """Mutating actions record the exact request they would make and change nothing."""
    timezone: str = "UTC"
    """Time zone of cron schedules in runbooks."""
    prometheus: HttpServiceConfig | None = None
    alertmanager: HttpServiceConfig | None = None
    kubernetes: KubernetesConfig | None = None
    s3: S3Config | None = None
    opensearch: OpenSearchConfig | None = None
    auth: AuthConfig
    approvers: dict[str, list[str]] = Field(default_factory=dict)
    """Approver groups: token names and slack:<user id>."""
    people: dict[str, list[str]] = Field(default_factory=dict)
    """Who is who: a person's identities (token names, slack:<user id>). Approvals are counted per
    person and separation of duties holds per person, so one person with a token and a Slack account
    cannot count as two approvers. An identity not listed is a person of its own."""
    slack: SlackConfig | None = None
    limits: LimitsConfig = LimitsConfig()
    approval: ApprovalConfig = ApprovalConfig()
    log: LogConfig = LogConfig()
    ha: HaConfig = HaConfig()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    def person_of(self, identity: str) -> str:
        """The person an identity belongs to (the identity itself when not listed in ``people``)."""
        for person, identities in self.people.items():
            if identity in identities:
                return person
        return identity

    @model_validator(mode="after")
    def _people_distinct(self) -> Config:
        names = {t.name for t in self.auth.tokens}
        seen: dict[str, str] = {}
        for person, identities in self.people.items():
            for i in identities:
                if not i.startswith("slack:") and i not in names:
                    raise ValueError(f"people.{person}: {i!r} is neither a token name nor slack:<user id>")
                if i in seen:
                    raise ValueError(f"people: {i!r} is listed for both {seen[i]} and {person}")
                seen[i] = person
        return self

    @model_validator(mode="after")
    def _approvers_known(self) -> Config:
        names = {t.name for t in self.auth.tokens}
        for group, members in self.approvers.items():
            for m in members:
                if not m.startswith("slack:") and m not in names:
                    raise ValueError(f"approvers.{group}: {m!r} is neither a token name nor slack:<user id>")
        return self


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {msg}" if path else f"{source}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if isinstance(data, dict):
        data = _anchor_paths(data, path.parent)
    return parse_config(data, str(path))


_PATH_KEYS = ("ca_bundle", "kubeconfig")
"""Keys of any section whose value is a file path."""


def _anchor_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a config file are read from the file's folder, not from wherever runbookd was
    started: state.path, runbooks.paths, every `file:` secret and every ca_bundle / kubeconfig."""

    def anchored(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str(base / value)
        return value

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if (key == "file" and set(node) <= {"env", "file"}) or key in _PATH_KEYS:
                    out[key] = anchored(value)
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    data = walk(data)
    state = data.get("state")
    if isinstance(state, dict) and "path" in state:
        state["path"] = anchored(state["path"])
    runbooks = data.get("runbooks")
    if isinstance(runbooks, dict) and isinstance(runbooks.get("paths"), list):
        runbooks["paths"] = [anchored(p) for p in runbooks["paths"]]
    return data


class Secrets(BaseModel):
    """Resolved secrets, kept apart from the config so the config can be shown and logged."""

    model_config = ConfigDict(frozen=True)

    webhook_token: SecretStr | None
    tokens: dict[str, SecretStr]
    prometheus_token: SecretStr | None = None
    alertmanager_token: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    opensearch_username: SecretStr | None = None
    opensearch_password: SecretStr | None = None
    opensearch_token: SecretStr | None = None
    state_password: SecretStr | None = None

    def values(self) -> list[str]:
        """Every secret's value: for the log to mask (``logs.mask_values``), never to be shown."""
        found = [s.get_secret_value() for s in self.tokens.values()]
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        return found


def resolve_secrets(cfg: Config) -> Secrets:
    """Read every secret the config names. Raises ConfigError naming every key that cannot be read (all of
    them at once, so one start reports every unset variable), never a value."""
    problems: list[str] = []

    def get(path: str, ref: SecretRef | None) -> SecretStr | None:
        if ref is None:
            return None
        try:
            return ref.resolve()
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            return None

    tokens: dict[str, SecretStr] = {}
    for i, t in enumerate(cfg.auth.tokens):
        value = get(f"auth.tokens.{i}.secret", t.secret)
        if value is not None:
            tokens[t.name] = value
    slack_on = cfg.slack is not None and cfg.slack.enabled
    os_cfg = cfg.opensearch
    secrets = Secrets(
        webhook_token=get("auth.webhook_token", cfg.auth.webhook_token),
        tokens=tokens,
        prometheus_token=get(
            "prometheus.bearer_token", cfg.prometheus.bearer_token if cfg.prometheus else None
        ),
        alertmanager_token=get(
            "alertmanager.bearer_token", cfg.alertmanager.bearer_token if cfg.alertmanager else None
        ),
        slack_bot_token=get("slack.bot_token", cfg.slack.bot_token) if slack_on and cfg.slack else None,
        slack_signing_secret=(
            get("slack.signing_secret", cfg.slack.signing_secret) if slack_on and cfg.slack else None
        ),
        s3_access_key=get("s3.access_key", cfg.s3.access_key) if cfg.s3 else None,
        s3_secret_key=get("s3.secret_key", cfg.s3.secret_key) if cfg.s3 else None,
        opensearch_username=get("opensearch.username", os_cfg.username) if os_cfg else None,
        opensearch_password=get("opensearch.password", os_cfg.password) if os_cfg else None,
        opensearch_token=get("opensearch.token", os_cfg.token) if os_cfg else None,
        state_password=get("state.password", cfg.state.password) if cfg.state.url else None,
    )
    if problems:
        raise ConfigError("\n".join(problems))
    return secrets
