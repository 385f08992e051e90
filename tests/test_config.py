"""Configuration checks that protect secrets."""

from __future__ import annotations

import pytest

from daemon.config import parse_config
from daemon.errors import ConfigError

BASE = {"auth": {"webhook_token": {"env": "RUNBOOKD_WEBHOOK_TOKEN"}}}


@pytest.mark.parametrize("section", ["prometheus", "alertmanager"])
def test_service_urls_carry_no_credentials(section: str) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.url: must not carry credentials") as caught:
        parse_config({**BASE, section: {"url": "http://admin:hunter2@127.0.0.1:9090"}})
    assert "hunter2" not in str(caught.value)  # the error names the key, never the secret
    with pytest.raises(ConfigError, match=rf"{section}\.url: must be an http\(s\) URL"):
        parse_config({**BASE, section: {"url": "file:///etc/passwd"}})
    assert parse_config({**BASE, section: {"url": "https://127.0.0.1:9090"}})
