"""The pure parts of the sidecar diagnosis: secret redaction and the classification of sidecar log lines."""

from __future__ import annotations

import pytest

from daemon.actions.thanos.sidecar import secret_names
from daemon.actions.thanos.sidecar_causes import Diagnosis, classify, decide
from daemon.kits.redaction import MASK, redact

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize(
    ("line", "gone", "kept"),
    [
        (
            f'level=debug msg="config" access_key={KEY_ID} secret_key="{SECRET}"',
            [KEY_ID, SECRET],
            ["access_key="],
        ),
        (
            '{"access_key": "minio", "secret_key": "minio123", "bucket": "thanos"}',
            ["minio123", '"minio"'],
            ["thanos"],
        ),
        ("secret_key: minio123\n", ["minio123"], ["secret_key: "]),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=abc123",
            ["abc123", "Credential="],
            [],
        ),
        ('curl -H "Authorization: Bearer eyJhbGciOi.payload.sig" http://x', ["eyJhbGciOi"], ["http://x"]),
        ("token refresh with bearer abcdefghijkl0123", ["abcdefghijkl0123"], ["bearer"]),
        (
            "GET /thanos/x?X-Amz-Credential=K%2F1&X-Amz-Signature=deadbeef&part=1",
            ["deadbeef", "K%2F1"],
            ["part=1"],
        ),
        ("dial http://admin:hunter2@minio:9000/", ["hunter2"], ["admin", "minio:9000"]),
        ("password=s3cr3t user=bob", ["s3cr3t"], ["user=bob"]),
        (f"found key {KEY_ID} in env", [KEY_ID], ["in env"]),
        (f"raw secret {SECRET} here", [SECRET], ["here"]),
        ("AWS_SECRET_ACCESS_KEY=abc/def+ghi", ["abc/def+ghi"], ["AWS_SECRET_ACCESS_KEY="]),
    ],
)
def test_redact_hides_credentials_and_keeps_the_rest(line: str, gone: list[str], kept: list[str]) -> None:
    out = redact(line)
    assert MASK in out
    for secret in gone:
        assert secret not in out
    for text in kept:
        assert text in out


@pytest.mark.parametrize(
    "line",
    [
        'level=error msg="upload failed" err="The Access Key Id you provided does not exist in our records."',
        "block 01HGW2N7ZK5V3Q9X8Y7Z6W5V4T uploaded, sha 0123456789abcdef0123456789abcdef01234567",
        'level=error err="SignatureDoesNotMatch: The request signature we calculated does not match"',
    ],
)
def test_redact_leaves_error_messages_and_ids_alone(line: str) -> None:
    assert redact(line) == line


def log(err: str) -> str:
    return f'level=error ts=2026-12-02T05:00:00Z caller=shipper.go msg="shipping failed" err="{err}"'


@pytest.mark.parametrize(
    ("err", "cause"),
    [
        ("upload chunks: Access Denied.", "credentials"),
        ("InvalidAccessKeyId: The Access Key Id you provided does not exist in our records.", "credentials"),
        ("SignatureDoesNotMatch: The request signature we calculated does not match", "credentials"),
        ("NoSuchBucket: The specified bucket does not exist", "bucket_missing"),
        ("found overlap or error during sync, cannot upload compacted block", "overlap"),
        ("read meta.json: unexpected end of JSON input", "corrupt_block"),
        ("dial tcp 10.0.0.5:9000: connect: connection refused", "network"),
        ("something new and strange", "unknown"),
    ],
)
def test_classify_recognises_each_cause(err: str, cause: str) -> None:
    assert classify(["level=info msg=ok", log(err)], ["upload"]).cause == cause


def test_classify_takes_the_newest_error_and_ignores_info_lines() -> None:
    lines = [log("connection refused"), 'level=info msg="access denied is a phrase"', log("Access Denied.")]
    d = classify(lines, [])
    assert d.cause == "credentials" and d.evidence == [lines[2]]
    assert classify([log("Access Denied."), log("connection refused")], []).cause == "network"


@pytest.mark.parametrize(
    ("cause", "changed", "verdict"),
    [
        ("credentials", True, "restart"),
        ("credentials", False, "report"),
        ("credentials", None, "report"),
        ("bucket_missing", True, "report"),
        ("overlap", None, "report"),
        ("corrupt_block", None, "report"),
        ("network", None, "restart"),
        ("unknown", None, "restart"),
    ],
)
def test_decide_restarts_only_what_a_restart_cures(cause: str, changed: bool | None, verdict: str) -> None:
    decision = decide(Diagnosis(cause, [], []), changed)  # type: ignore[arg-type]
    assert decision.verdict == verdict
    if cause == "credentials" and changed is False:
        assert "keys themselves" in decision.reason


def test_secret_names_from_env_envfrom_and_mounted_volumes() -> None:
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "thanos-sidecar",
                    "env": [
                        {
                            "name": "OBJSTORE_CONFIG",
                            "valueFrom": {"secretKeyRef": {"name": "objstore", "key": "k"}},
                        },
                        {"name": "PLAIN", "value": "x"},
                    ],
                    "envFrom": [{"secretRef": {"name": "extra"}}],
                    "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
                },
                {
                    "name": "prometheus",
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "other"}}}],
                },
            ],
            "volumes": [
                {"name": "tls", "secret": {"secretName": "tls-certs"}},
                {"name": "n", "secret": {"secretName": "no"}},
            ],
        }
    }
    assert secret_names(pod, "thanos-sidecar") == ["extra", "objstore", "tls-certs"]
