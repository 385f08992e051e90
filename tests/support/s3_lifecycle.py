"""The seed's three buckets on moto's S3 server, with lifecycle rules set and read back through boto3
(independently of runbookd's client)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

SEED_BUCKETS = ("thanos", "opensearch-logs", "longhorn-backups")


class Buckets:
    def __init__(self, moto: Any, names: tuple[str, ...] = SEED_BUCKETS) -> None:
        self.s3 = boto3.client(
            "s3",
            endpoint_url=moto.endpoint_url,
            aws_access_key_id=moto.access_key_id,
            aws_secret_access_key=moto.secret_access_key,
            region_name=moto.region,
            config=Config(s3={"addressing_style": "path"}),
        )
        for name in names:
            self.s3.create_bucket(Bucket=name)

    def put_rules(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        self.s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})

    def rules(self, bucket: str) -> list[dict[str, Any]] | None:
        """The rules, or None when the bucket has no lifecycle configuration at all."""
        try:
            return list(self.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
                return None
            raise


def expire(rule_id: str, days: int = 180, prefix: str = "") -> dict[str, Any]:
    return {"ID": rule_id, "Filter": {"Prefix": prefix}, "Status": "Enabled", "Expiration": {"Days": days}}


def abort_multipart(rule_id: str = "abort-multipart", days: int = 7) -> dict[str, Any]:
    return {
        "ID": rule_id,
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }
