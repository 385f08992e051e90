"""Bearer tokens: each names an identity and a role. Compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from pydantic import SecretStr

from daemon.config import TokenConfig
from daemon.engine.identity import Identity
from daemon.errors import ConfigError


class Unauthorized(Exception):
    """No valid credentials; answered 401."""


def _digest(value: str) -> bytes:
    # surrogateescape: a header that is not UTF-8 (``Bearer \xff``) reaches us with its bytes escaped;
    # it digests to something no token matches (401), instead of failing to encode (500).
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def bearer(request: web.Request) -> str | None:
    """The bearer token, None without one; Unauthorized for two Authorization headers (which one a proxy
    or a log took is not known: an adversarial pass got in with a good one first, a bad one second)."""
    headers = request.headers.getall("Authorization", [])
    if len(headers) > 1:
        raise Unauthorized("more than one Authorization header")
    header = headers[0] if headers else ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class TokenAuth:
    def __init__(
        self, tokens: list[TokenConfig], secrets: dict[str, SecretStr], webhook: SecretStr | None
    ) -> None:
        self._by_digest: dict[bytes, TokenConfig] = {}
        for t in tokens:
            if t.name.startswith("slack:"):
                raise ConfigError(
                    f"auth.tokens: a token cannot be named {t.name!r}: slack:<user id> names a Slack user"
                )
            digest = _digest(secrets[t.name].get_secret_value())
            other = self._by_digest.get(digest)
            if other is not None:  # one secret, two identities: whichever came last would win
                raise ConfigError(f"auth.tokens: tokens {other.name!r} and {t.name!r} have the same secret")
            self._by_digest[digest] = t
        self._webhook = _digest(webhook.get_secret_value()) if webhook is not None else None
        if self._webhook is not None and self._webhook in self._by_digest:
            name = self._by_digest[self._webhook].name
            raise ConfigError(
                f"auth.webhook_token: it is also the secret of token {name!r}; give Alertmanager its own"
            )

    def identity(self, request: web.Request) -> Identity:
        value = bearer(request)
        if value is None:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        digest = _digest(value)
        for known, token in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                via = "cli" if request.headers.get("X-Runbookd-Client") == "cli" else "api"
                return Identity(name=token.name, role=token.role, via=via)
        raise Unauthorized("invalid token")

    def check_webhook(self, request: web.Request) -> None:
        if self._webhook is None:
            return
        value = bearer(request)
        if value is None or not hmac.compare_digest(self._webhook, _digest(value)):
            raise Unauthorized("missing or invalid webhook token")
