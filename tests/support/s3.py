"""moto's S3 server (``moto_server -H 127.0.0.1 -p PORT``): a real S3 HTTP endpoint on loopback.

Talk to it exactly as to MinIO: path-style addressing, fake credentials, region us-east-1.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from . import httpclient
from .procs import ServerProcess, base_env


def moto_server_bin() -> str:
    """``moto_server`` next to the running interpreter (the venv's bin/), else on PATH."""
    candidate = Path(sys.executable).parent / "moto_server"  # not resolved: keep the venv's bin/
    if candidate.exists():
        return str(candidate)
    found = shutil.which("moto_server")
    if not found:
        raise FileNotFoundError("moto_server not found: pip install 'moto[server]'")
    return found


class MotoS3Server(ServerProcess):
    ready_path = "/moto-api/"
    log_name = "moto_server.log"

    access_key_id = "testing"
    secret_access_key = "testing"
    region = "us-east-1"

    def __init__(self, workdir: Path, *, port: int | None = None, ready_timeout: float = 60.0) -> None:
        env = base_env(
            {
                "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        super().__init__("moto_server", workdir, port=port, env=env, ready_timeout=ready_timeout)

    def build_argv(self) -> list[str]:
        return [moto_server_bin(), "-H", self.host, "-p", str(self.port)]

    @property
    def endpoint_url(self) -> str:
        return self.url

    def reset(self) -> None:
        """Forget every bucket and object (``POST /moto-api/reset``)."""
        r = httpclient.post(self.url + "/moto-api/reset")
        if r.status != 200:
            raise AssertionError(f"moto reset failed: {r}")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``session.create_client("s3", **moto.client_kwargs())`` (path-style)."""
        from aiobotocore.config import AioConfig

        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": self.region,
            "config": AioConfig(s3={"addressing_style": "path"}),
        }
