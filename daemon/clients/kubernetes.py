"""The Kubernetes API, through kubernetes-asyncio's ApiClient (configuration, auth, TLS, token refresh).

Every call goes through ``KubernetesClient.request``: a timeout on each attempt, bounded retries with
backoff on 429/5xx/connection errors, and ApiException wrapped into daemon.errors (original chained).
Objects come back as plain JSON dicts, exactly as the API server wrote them, so that nothing is lost
or invented by model (de)serialisation. Writes are described by ``WriteRequest`` first: the same value
is either sent or, in dry-run, shown to the operator, so a dry run shows exactly what would be sent.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import aiohttp

# kubernetes_asyncio is imported where it is used: importing any part of it loads the whole generated
# client (~35 MB, ~0.25 s), which a daemon without a `kubernetes:` section should not pay for.
if TYPE_CHECKING:
    from kubernetes_asyncio.client.exceptions import ApiException

from daemon.config import KubernetesConfig
from daemon.errors import PermanentError, TemporaryError
from daemon.kits.quantities import parse_quantity

JSON_CT = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

_RESPONSE_TYPES = {code: "object" for code in (200, 201, 202)}


class KubeNotFound(PermanentError):
    """The object (or the path) does not exist: 404."""


class KubeConflict(PermanentError):
    """409: the object changed since it was read (resourceVersion / UID precondition), or exists."""


class KubeForbidden(PermanentError):
    """401/403: runbookd's service account may not do this (RBAC), or admission refused it."""


class KubeInvalid(PermanentError):
    """400/415/422: the API server rejected the request itself; sending it again will not help."""


class EvictionBlocked(TemporaryError):
    """429 from the eviction subresource: a PodDisruptionBudget does not allow this eviction now."""


def _path_part(name: str) -> str:
    return quote(name, safe="")


FIELD_MANAGER = "runbookd"
"""The field manager runbookd's updates and patches name (``WriteRequest.query``)."""


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{_path_part(name)}"


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_path_part(namespace)}/pods/{_path_part(name)}"


def pvc_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_path_part(namespace)}/persistentvolumeclaims/{_path_part(name)}"


def storage_class_path(name: str) -> str:
    return f"/apis/storage.k8s.io/v1/storageclasses/{_path_part(name)}"


WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"]
_WORKLOAD_PLURALS: dict[str, str] = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "ReplicaSet": "replicasets",
}


def workload_path(kind: WorkloadKind, namespace: str, name: str) -> str:
    plural = _WORKLOAD_PLURALS[kind]
    return f"/apis/apps/v1/namespaces/{_path_part(namespace)}/{plural}/{_path_part(name)}"


@dataclass(frozen=True)
class WriteRequest:
    """One mutating request, described before it is sent (and instead of sending it, in dry-run)."""

    method: Literal["PATCH", "POST", "DELETE", "PUT"]
    path: str
    body: Mapping[str, Any] | None = None
    content_type: str = JSON_CT

    @property
    def query(self) -> dict[str, str]:
        """An update or patch names runbookd its field manager: the API server then records which fields
        runbookd set (``metadata.managedFields``), and a later change by anyone else takes them over.
        ``guards.cordoned_by_runbookd`` reads that to tell runbookd's cordon from a person's."""
        return {"fieldManager": FIELD_MANAGER} if self.method in ("PATCH", "PUT") else {}

    def describe(self, host: str) -> dict[str, Any]:
        """What the operator sees in a dry run: exactly what ``KubernetesClient.send`` would send."""
        query = "".join(f"?{k}={v}" for k, v in self.query.items())
        return {
            "method": self.method,
            "url": host.rstrip("/") + self.path + query,
            "path": self.path,
            "content_type": self.content_type,
            "body": json.loads(json.dumps(self.body)) if self.body is not None else None,
        }


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    """Tries per call, the first included. 429/5xx/connection errors/timeouts are retried."""
    backoff: float = 0.5
    """Seconds before the second try; doubled for each further try (with jitter), capped at max_delay."""
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        base: float = min(self.backoff * (2 ** (attempt - 1)), self.max_delay)
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography


@dataclass
class KubernetesClient:
    """The calls runbookd makes to the Kubernetes API. Build it with ``connect``; close it when done."""

    api: Any
    """A ``kubernetes_asyncio.client.ApiClient``."""
    timeout: float = 10.0
    """Seconds for one attempt of one call (``_request_timeout``)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_pvc_bytes: int | None = None
    """Site-wide ceiling for PVC expansion (config ``kubernetes.max_pvc_size``); None: runbooks decide."""
    longhorn_namespace: str = "longhorn-system"
    """Namespace of Longhorn's custom resources (config ``kubernetes.longhorn_namespace``)."""
    take_out_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    """Held by a node action from its blast-radius check until its cordon is sent, so that two steps
    running at once (limits.max_concurrent_mutating_steps > 1) cannot both pass the check on the same
    picture of the cluster and together take out more nodes than the guards allow."""

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    async def close(self) -> None:
        await self.api.close()

    # -- the one way to the API ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON_CT,
        text_limit: int | None = None,
    ) -> Any:
        """One API call with timeout and bounded retries; the decoded JSON answer, or a daemon error.

        With ``text_limit`` the answer is plain text (a log), of which at most that many bytes are read."""
        from kubernetes_asyncio.client.exceptions import ApiException

        what = f"{method} {path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                if text_limit is not None:
                    return await self._call_text(path, query, text_limit)
                return await self._call(method, path, query, body, content_type)
            except ApiException as exc:
                error = _wrap_api_exception(exc, what, eviction=path.endswith("/eviction"))
            except TimeoutError as exc:
                error = TemporaryError(f"kubernetes API did not answer {what} within {self.timeout:g}s")
                error.__cause__ = exc
            except aiohttp.ClientError as exc:
                error = TemporaryError(f"kubernetes API unreachable for {what}: {exc}")
                error.__cause__ = exc
            retryable = isinstance(error, TemporaryError) and not isinstance(error, EvictionBlocked)
            if not retryable or attempt >= self.retry.attempts:
                raise error
            retry_after = error.retry_after if isinstance(error, TemporaryError) else None
            await asyncio.sleep(self.retry.delay(attempt, retry_after))

    async def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        content_type: str,
    ) -> Any:
        return await self.api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Accept": JSON_CT, "Content-Type": content_type},
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
            response_types_map=_RESPONSE_TYPES,
            _return_http_data_only=True,
            _preload_content=True,
            _request_timeout=self.timeout,
        )

    async def _call_text(self, path: str, query: Mapping[str, str] | None, limit: int) -> str:
        """GET a plain-text answer, reading at most ``limit`` bytes of it (the rest is never buffered)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        async with asyncio.timeout(self.timeout):
            resp = await self.api.call_api(
                path,
                "GET",
                query_params=list((query or {}).items()),
                header_params={"Accept": "text/plain, */*"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            try:
                if resp.status >= 400:
                    exc = ApiException(status=resp.status, reason=resp.reason)
                    exc.body = await _read_at_most(resp.content, 64 * 1024)
                    exc.headers = resp.headers
                    raise exc
                raw = await _read_at_most(resp.content, limit)
            finally:
                resp.release()
        return raw.decode("utf-8", "replace")

    async def send(self, req: WriteRequest) -> Any:
        return await self.request(
            req.method, req.path, query=req.query, body=req.body, content_type=req.content_type
        )

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, path: str) -> dict[str, Any]:
        obj = await self.request("GET", path)
        if not isinstance(obj, dict):
            raise PermanentError(f"kubernetes API answered GET {path} with a non-object")
        return obj

    async def list_objects(
        self, path: str, *, field_selector: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {}
        if field_selector:
            query["fieldSelector"] = field_selector
        if label_selector:
            query["labelSelector"] = label_selector
        body = await self.request("GET", path, query=query)
        items = body.get("items") if isinstance(body, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    async def get_node(self, name: str) -> dict[str, Any]:
        return await self.get(node_path(name))

    async def list_nodes(self) -> list[dict[str, Any]]:
        return await self.list_objects("/api/v1/nodes")

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.get(pod_path(namespace, name))

    async def pods_on_node(self, node: str) -> list[dict[str, Any]]:
        return await self.list_objects("/api/v1/pods", field_selector=f"spec.nodeName={node}")

    async def pods_in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return await self.list_objects(f"/api/v1/namespaces/{_path_part(namespace)}/pods")

    async def get_pvc(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.get(pvc_path(namespace, name))

    async def get_storage_class(self, name: str) -> dict[str, Any]:
        return await self.get(storage_class_path(name))

    async def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None,
        tail_lines: int,
        since_seconds: int | None,
        limit_bytes: int,
    ) -> str:
        """A container's log (``GET .../pods/{name}/log``), at most ``limit_bytes`` of it."""
        query = {"tailLines": str(tail_lines), "limitBytes": str(limit_bytes)}
        if container:
            query["container"] = container
        if since_seconds is not None:
            query["sinceSeconds"] = str(since_seconds)
        text: str = await self.request(
            "GET", pod_path(namespace, name) + "/log", query=query, text_limit=limit_bytes
        )
        return text

    async def get_workload(self, kind: WorkloadKind, namespace: str, name: str) -> dict[str, Any]:
        return await self.get(workload_path(kind, namespace, name))

    # -- writes, described -----------------------------------------------------------------------

    @staticmethod
    def patch_node(name: str, patch: Mapping[str, Any]) -> WriteRequest:
        return WriteRequest("PATCH", node_path(name), patch, STRATEGIC_MERGE_PATCH)

    @staticmethod
    def patch_pvc(namespace: str, name: str, patch: Mapping[str, Any]) -> WriteRequest:
        return WriteRequest("PATCH", pvc_path(namespace, name), patch, STRATEGIC_MERGE_PATCH)

    @staticmethod
    def patch_workload(
        kind: WorkloadKind, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> WriteRequest:
        return WriteRequest("PATCH", workload_path(kind, namespace, name), patch, STRATEGIC_MERGE_PATCH)

    @staticmethod
    def evict_pod(namespace: str, name: str, *, grace_period_seconds: int | None = None) -> WriteRequest:
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        return WriteRequest("POST", pod_path(namespace, name) + "/eviction", body)

    @staticmethod
    def delete_pod(
        namespace: str, name: str, *, uid: str, grace_period_seconds: int | None = None
    ) -> WriteRequest:
        """Delete exactly the pod that was inspected: a UID precondition makes a replacement a 409."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid},
        }
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        return WriteRequest("DELETE", pod_path(namespace, name), body)


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body (``read(n)`` alone returns whatever chunk has arrived)."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = await stream.read(limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _status_message(exc: ApiException) -> tuple[str, dict[str, Any]]:
    """The API server's own explanation (a Status object), when it sent one."""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        status = json.loads(body) if isinstance(body, str) and body else None
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        details = status.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        said = [str(c["message"]) for c in causes or () if isinstance(c, dict) and c.get("message")]
        message = str(status["message"]) + (f" ({'; '.join(said)})" if said else "")
        return message[:500], status
    return (str(exc.reason or "no reason given"))[:200], {}


def _retry_after(exc: ApiException, status: Mapping[str, Any]) -> float | None:
    headers: Any = exc.headers or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    if raw is not None and str(raw).isdigit():
        return float(raw)
    details = status.get("details")
    if isinstance(details, dict) and isinstance(details.get("retryAfterSeconds"), int):
        return float(details["retryAfterSeconds"])
    return None


def _wrap_api_exception(exc: ApiException, what: str, *, eviction: bool) -> Exception:
    """ApiException -> the daemon error that says what to do next, with the original chained."""
    code = int(exc.status or 0)
    message, status = _status_message(exc)
    text = f"kubernetes API answered {code} to {what}: {message}"
    error: Exception
    if code == 404:
        error = KubeNotFound(text, status=code)
    elif code == 409:
        error = KubeConflict(text, status=code)
    elif code in (401, 403):
        error = KubeForbidden(text, status=code)
    elif code == 429 and eviction:
        error = EvictionBlocked(text, retry_after=_retry_after(exc, status), status=code)
    elif code == 429 or code >= 500:
        error = TemporaryError(text, retry_after=_retry_after(exc, status), status=code)
    else:
        error = KubeInvalid(text, status=code)
    error.__cause__ = exc
    return error


async def connect(
    *,
    host: str | None = None,
    kubeconfig: Path | None = None,
    context: str | None = None,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
) -> KubernetesClient:
    """Build a client: an explicit ``host`` (tests, ``kubectl proxy``), else a kubeconfig file, else the
    pod's service account (in-cluster)."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import config as k8s_config

    configuration = k8s.Configuration()
    if host is not None:
        configuration.host = host
    elif kubeconfig is not None:
        await k8s_config.load_kube_config(
            config_file=str(kubeconfig),
            context=context,
            client_configuration=configuration,
            persist_config=False,  # never rewrite the operator's kubeconfig (token refreshes)
        )
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException as exc:
            raise PermanentError(
                f"not running in a Kubernetes pod and no kubernetes.kubeconfig configured: {exc}"
            ) from exc
    return KubernetesClient(k8s.ApiClient(configuration), timeout=timeout, retry=retry or RetryPolicy())


async def from_config(cfg: KubernetesConfig) -> KubernetesClient:
    """The client for the config's ``kubernetes:`` section."""
    client = await connect(
        host=cfg.host,
        kubeconfig=cfg.kubeconfig,
        context=cfg.context,
        timeout=cfg.timeout,
        retry=RetryPolicy(attempts=cfg.retries + 1),
    )
    client.max_pvc_bytes = parse_quantity(cfg.max_pvc_size) if cfg.max_pvc_size else None
    client.longhorn_namespace = cfg.longhorn_namespace
    return client
