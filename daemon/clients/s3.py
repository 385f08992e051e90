"""S3-compatible object storage (MinIO in the seed) through aiobotocore, with errors split by what to do next.

aiobotocore and botocore are imported on first use, not at start: they cost half a second and tens of
MB, and most daemons never call S3. There is deliberately no delete here: runbookd never removes an
object (Thanos blocks are retired with a deletion-mark.json that the compactor acts on). The only
deletion is of a bucket's lifecycle configuration, when the audit's last dangerous rule is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import SecretStr

from daemon.config import S3Config
from daemon.errors import PermanentError, TemporaryError


class S3TemporaryError(TemporaryError):
    """Timeout, connection refused, throttled, 5xx: the same request may succeed later."""

    def __init__(
        self, message: str, *, kind: str, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.kind = kind
        self.code = code


class S3PermanentError(PermanentError):
    """No such bucket, access denied, bad credentials, TLS refused: retrying will not help."""

    def __init__(
        self, message: str, *, kind: str, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.kind = kind
        self.code = code


S3Error = S3TemporaryError | S3PermanentError
T = TypeVar("T")

_PERMANENT_CODES = {
    "NoSuchBucket": "no_such_bucket",
    "AccessDenied": "access_denied",
    "AllAccessDisabled": "access_denied",
    "InvalidAccessKeyId": "credentials",
    "SignatureDoesNotMatch": "credentials",
    "ExpiredToken": "credentials",
    "InvalidToken": "credentials",
    "RequestTimeTooSkewed": "clock_skew",
    "NoSuchKey": "not_found",
    "InvalidBucketName": "invalid_request",
    "AuthorizationHeaderMalformed": "credentials",
}
_TEMPORARY_CODES = {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable"}


def _classify_client_error(exc: Any, what: str) -> S3Error:
    """A botocore ClientError (the server answered) -> our error, keeping code and HTTP status."""
    err = exc.response.get("Error") or {}
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = str(err.get("Code") or status or "?")
    message = str(err.get("Message") or "").strip()
    # A HEAD has no body, so the code is the bare status.
    if code == "404" and what.startswith("HeadBucket"):
        code = "NoSuchBucket"
    elif code == "404":
        code = "NoSuchKey"
    elif code == "403":
        code = "AccessDenied"
    text = (
        f"S3 {what}: {code}" + (f": {message}" if message else "") + (f" (HTTP {status})" if status else "")
    )
    if code in _TEMPORARY_CODES or (isinstance(status, int) and (status >= 500 or status == 429)):
        kind = "throttled" if code in ("SlowDown", "Throttling") or status == 429 else "server_error"
        return S3TemporaryError(text, kind=kind, code=code, status=status)
    kind = _PERMANENT_CODES.get(code, "invalid_request")
    return S3PermanentError(text, kind=kind, code=code, status=status)


def wrap_error(exc: BaseException, what: str, endpoint: str) -> S3Error | None:
    """botocore / aiohttp errors -> S3TemporaryError or S3PermanentError; None for anything else (a bug,
    left to propagate as it is)."""
    from botocore import exceptions as b

    if isinstance(exc, b.ClientError):
        return _classify_client_error(exc, what)
    if isinstance(exc, b.SSLError):
        return S3PermanentError(
            f"S3 {what}: TLS handshake with {endpoint} failed ({exc.kwargs.get('error')}); set s3.ca_bundle "
            "to the CA of its certificate (or, for a self-signed one, s3.verify_tls: false)",
            kind="tls",
        )
    if isinstance(exc, b.ConnectTimeoutError | b.ReadTimeoutError | TimeoutError):
        return S3TemporaryError(f"S3 {what}: {endpoint} did not answer in time", kind="timeout")
    if isinstance(exc, b.EndpointConnectionError | b.ProxyConnectionError):
        return S3TemporaryError(f"S3 {what}: cannot connect to {endpoint}", kind="unreachable")
    if isinstance(exc, b.NoCredentialsError | b.PartialCredentialsError):
        return S3PermanentError(
            f"S3 {what}: no credentials (set s3.access_key and s3.secret_key)", kind="credentials"
        )
    if isinstance(exc, b.HTTPClientError):
        return S3TemporaryError(f"S3 {what}: connection to {endpoint} failed ({exc})", kind="connection")
    if isinstance(exc, b.ParamValidationError):
        return S3PermanentError(f"S3 {what}: invalid request ({exc})", kind="invalid_request")
    return None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float
    """Seconds since the epoch."""


class Memo:
    """Parsed contents of objects their readers know to be immutable, by bucket and key, bounded: the
    oldest entry goes first when full. Owned by the client, so it lives as long as the daemon and is
    shared by every action."""

    MAX_SHARED = 10_000

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: dict[str, Any] = {}  # "bucket/key" -> value, in insertion order
        self._shared: dict[Any, Any] = {}

    def share(self, value: T) -> T:
        """One canonical copy of an immutable, hashable value that many entries repeat (the label set of a
        Thanos stream): a cached Thanos meta.json then costs ~350 bytes instead of ~900. Bounded."""
        found = self._shared.get(value)
        if found is not None:
            return cast(T, found)
        if len(self._shared) < self.MAX_SHARED:
            self._shared[value] = value
        return value

    def __len__(self) -> int:
        return len(self._items)

    def get(self, bucket: str, key: str) -> Any:
        return self._items.get(f"{bucket}/{key}")

    def put(self, bucket: str, key: str, value: Any) -> None:
        if self.capacity <= 0:
            return
        self._items[f"{bucket}/{key}"] = value
        while len(self._items) > self.capacity:
            del self._items[next(iter(self._items))]

    def retain(self, bucket: str, prefix: str, keys: set[str]) -> int:
        """Forget entries under ``bucket``/``prefix`` whose key is not in ``keys`` (objects gone since);
        returns how many were dropped."""
        under = f"{bucket}/{prefix}"
        cut = len(bucket) + 1
        gone = [k for k in self._items if k.startswith(under) and k[cut:] not in keys]
        for k in gone:
            del self._items[k]
        return len(gone)


class S3Client:
    """One aiobotocore client, created on first use. Every call has connect/read timeouts and bounded
    retries (botocore's standard mode); every error leaves as S3TemporaryError or S3PermanentError."""

    def __init__(
        self,
        cfg: S3Config,
        *,
        access_key: SecretStr | None = None,
        secret_key: SecretStr | None = None,
    ) -> None:
        self.cfg = cfg
        self._access_key = access_key
        self._secret_key = secret_key
        self.memo = Memo(cfg.meta_cache_entries)
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    @property
    def endpoint_url(self) -> str:
        return self.cfg.endpoint_url

    @property
    def max_concurrency(self) -> int:
        return self.cfg.max_concurrency

    def object_url(self, bucket: str, key: str = "") -> str:
        """The path-style URL of an object (how dry-run describes a request; no credentials in it)."""
        from urllib.parse import quote

        return f"{self.endpoint_url}/{bucket}/{quote(key)}" if key else f"{self.endpoint_url}/{bucket}"

    def _verify(self) -> bool | str:
        if self.cfg.ca_bundle is not None:
            return str(self.cfg.ca_bundle)
        return self.cfg.verify_tls

    async def _get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                config = AioConfig(
                    s3={"addressing_style": self.cfg.addressing_style},
                    connect_timeout=self.cfg.connect_timeout,
                    read_timeout=self.cfg.timeout,
                    retries={"total_max_attempts": self.cfg.retries + 1, "mode": "standard"},
                    max_pool_connections=self.cfg.max_concurrency,
                    user_agent_extra="runbookd",
                )
                keys: dict[str, str] = {}
                if self._access_key is not None and self._secret_key is not None:
                    keys = {
                        "aws_access_key_id": self._access_key.get_secret_value(),
                        "aws_secret_access_key": self._secret_key.get_secret_value(),
                    }
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.cfg.region,
                        verify=self._verify(),
                        config=config,
                        **keys,
                    )
                )
                self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._client = self._stack = None

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            wrapped = wrap_error(exc, what, self.endpoint_url)
            if wrapped is None:
                raise
            raise wrapped from exc

    # -- reads ---------------------------------------------------------------------------------------------

    async def head_bucket(self, bucket: str) -> None:
        with self._errors(f"HeadBucket {bucket}"):
            await (await self._get()).head_bucket(Bucket=bucket)

    async def list_page(self, bucket: str, *, prefix: str = "", max_keys: int = 1000) -> list[ObjectInfo]:
        """The first page of ListObjectsV2 (at most ``max_keys`` objects)."""
        with self._errors(f"ListObjectsV2 {bucket}"):
            page = await (await self._get()).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max_keys)
        return _objects(page)

    async def iter_pages(
        self, bucket: str, *, prefix: str = "", page_size: int = 1000
    ) -> AsyncIterator[list[ObjectInfo]]:
        """Every object under ``prefix``, one ListObjectsV2 page at a time (in key order)."""
        with self._errors(f"ListObjectsV2 {bucket}/{prefix}"):
            pages = (
                (await self._get())
                .get_paginator("list_objects_v2")
                .paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
            )
            async for page in pages:
                yield _objects(page)

    async def get_object(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes, or None when it does not exist. Larger than ``max_bytes``: PermanentError."""
        what = f"GetObject {bucket}/{key}"
        try:
            with self._errors(what):
                resp = await (await self._get()).get_object(Bucket=bucket, Key=key)
                async with resp["Body"] as body:
                    size = int(resp.get("ContentLength") or 0)
                    if size > max_bytes:
                        raise S3PermanentError(
                            f"S3 {what}: {size} bytes, more than the {max_bytes} expected", kind="too_large"
                        )
                    data: bytes = await body.read()
        except S3PermanentError as exc:
            if exc.kind == "not_found":
                return None
            raise
        return data

    # -- writes --------------------------------------------------------------------------------------------

    async def put_object(self, bucket: str, key: str, body: bytes, *, content_type: str) -> str:
        """Write one object; returns its ETag."""
        with self._errors(f"PutObject {bucket}/{key}"):
            resp = await (await self._get()).put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=content_type
            )
        return str(resp.get("ETag", "")).strip('"')

    # -- lifecycle configuration ----------------------------------------------------------------------------

    async def get_lifecycle_rules(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules as S3 returns them; [] when it has no configuration."""
        try:
            with self._errors(f"GetBucketLifecycleConfiguration {bucket}"):
                resp = await (await self._get()).get_bucket_lifecycle_configuration(Bucket=bucket)
        except S3PermanentError as exc:
            if exc.code == "NoSuchLifecycleConfiguration":
                return []
            raise
        return [dict(r) for r in resp.get("Rules", ())]

    async def put_lifecycle_rules(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        """Replace the whole configuration (PutBucketLifecycleConfiguration has no partial form)."""
        with self._errors(f"PutBucketLifecycleConfiguration {bucket}"):
            await (await self._get()).put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": rules}
            )

    async def delete_lifecycle(self, bucket: str) -> None:
        with self._errors(f"DeleteBucketLifecycle {bucket}"):
            await (await self._get()).delete_bucket_lifecycle(Bucket=bucket)


def _objects(page: dict[str, Any]) -> list[ObjectInfo]:
    return [
        ObjectInfo(key=o["Key"], size=int(o.get("Size", 0)), last_modified=o["LastModified"].timestamp())
        for o in page.get("Contents", ())
    ]


def from_config(cfg: S3Config, *, access_key: SecretStr | None, secret_key: SecretStr | None) -> S3Client:
    """No I/O: the aiobotocore client is created on the first request."""
    return S3Client(cfg, access_key=access_key, secret_key=secret_key)
