"""Redact secrets from text runbookd shows people (container logs in a step's output, Slack, the API).

Log lines of S3 clients and HTTP servers routinely carry credentials: minio-go and the AWS SDKs print
``access_key``/``secret_key`` in config dumps, ``Authorization: AWS4-HMAC-SHA256 Credential=...`` in
request traces, presigned URLs carry ``X-Amz-Signature``, URLs carry ``user:password@``. Each rule
below keeps what identifies the line (the key name, the scheme) and replaces only the value, so an
operator still sees *that* a credential was there and where.

Redaction is deliberately greedy: a false positive hides a harmless value, a false negative leaks a key.
"""

from __future__ import annotations

import re

MASK = "[REDACTED]"

_KEY_NAMES = (
    r"aws[_-]?secret[_-]?access[_-]?key|aws[_-]?access[_-]?key[_-]?id|aws[_-]?session[_-]?token"
    r"|secret[_-]?access[_-]?key|access[_-]?key[_-]?id|access[_-]?key|secret[_-]?key|secret"
    r"|session[_-]?token|api[_-]?key|apikey|auth[_-]?token|access[_-]?token|refresh[_-]?token|token"
    r"|password|passwd|pwd|client[_-]?secret|private[_-]?key|credentials?|x-amz-signature"
    r"|x-amz-credential|x-amz-security-token|signature"
)

# key = value, key: value, "key": "value", key="value" (logfmt, YAML, JSON, query strings, environment
# variables). The key may carry a prefix: S3_SECRET_KEY, MINIO_ROOT_PASSWORD, objstore.secret_key.
_KEY_VALUE = re.compile(
    rf"""(?ix)
    (?P<key>["']?\b[a-z0-9_.-]*?(?:{_KEY_NAMES})(?![a-z0-9])["']?)  # the key, maybe quoted and
                                                      # prefixed (MINIO_ROOT_PASSWORD, objstore.secret_key)
    (?P<sep>\s*[:=]\s*)                               # : or =
    (?P<quote>\\?["'])?                               # the value's opening quote, maybe escaped
    (?P<value>(?(quote)[^"'\\\r\n]*|[^\s"',;&}}\])]+))
    """
)
# Authorization headers and bearer tokens: everything after the scheme up to the end of the value.
_AUTH_HEADER = re.compile(
    r"""(?i)(?P<key>\b(?:proxy-)?authorization\b["']?\s*[:=]\s*["']?)(?P<value>[^"'\r\n]+)"""
)
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer|basic|token)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})")
# Credentials in URLs: scheme://user:password@host
_URL_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<value>[^/\s@]+)(?=@)", re.I)
# AWS access key ids (AKIA... long-term, ASIA... temporary) wherever they stand.
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b")
# A 40-character base64 string standing alone is the shape of an AWS/MinIO secret key.
_AWS_SECRET = re.compile(
    r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=]))"
    r"(?=[A-Za-z0-9/+=]{0,39}[A-Z])(?=[A-Za-z0-9/+=]{0,39}[a-z])(?=[A-Za-z0-9/+=]{0,39}[0-9/+])"
    r"[A-Za-z0-9/+=]{40}"
)


def redact(text: str) -> str:
    """``text`` with every credential-looking value replaced by ``[REDACTED]``."""
    text = _AUTH_HEADER.sub(lambda m: m["key"] + MASK, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    text = _URL_USERINFO.sub(lambda m: m["head"] + MASK, text)
    text = _KEY_VALUE.sub(_mask_value, text)
    text = _AWS_KEY_ID.sub(MASK, text)
    return _AWS_SECRET.sub(MASK, text)


def _mask_value(m: re.Match[str]) -> str:
    if not m["value"] or m["value"] == MASK:
        return m[0]
    return f"{m['key']}{m['sep']}{m['quote'] or ''}{MASK}"


def redact_lines(lines: list[str]) -> list[str]:
    return [redact(line) for line in lines]
