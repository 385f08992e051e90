"""Review findings on identities: a bearer token must name exactly one identity, and an API token must
not be able to pass for a Slack user (approvals count distinct identities; separation of duties compares
them)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from daemon.config import TokenConfig
from daemon.errors import ConfigError
from daemon.server.auth import TokenAuth


def token(name: str, role: Any) -> TokenConfig:
    return TokenConfig.model_validate({"name": name, "role": role, "secret": {"env": "UNUSED"}})


def test_two_tokens_with_the_same_secret_are_refused() -> None:
    """Silently keeping one of them would give whoever holds the viewer's secret the admin's role (or
    the other way round), depending on their order in the file."""
    tokens = [token("vic", "viewer"), token("admin", "admin")]
    secrets = {"vic": SecretStr("same-secret"), "admin": SecretStr("same-secret")}
    with pytest.raises(ConfigError) as err:
        TokenAuth(tokens, secrets, SecretStr("webhook-secret"))
    assert "same secret" in str(err.value) and "same-secret" not in str(err.value)


def test_the_webhook_token_cannot_also_be_an_api_token() -> None:
    """The webhook token sits in Alertmanager's config; it must not also open the approval API."""
    tokens = [token("admin", "admin")]
    with pytest.raises(ConfigError) as err:
        TokenAuth(tokens, {"admin": SecretStr("shared")}, SecretStr("shared"))
    assert "webhook" in str(err.value) and "shared" not in str(err.value)


def test_a_token_cannot_be_named_like_a_slack_user() -> None:
    """``slack:U...`` is how Slack users are named in approver groups: an API token with such a name would
    act as that Slack user (approve as them, count as them among distinct approvers)."""
    with pytest.raises(ConfigError) as err:
        TokenAuth([token("slack:U0123ABCD", "approver")], {"slack:U0123ABCD": SecretStr("s")}, None)
    assert "slack:" in str(err.value)


def test_distinct_tokens_are_fine() -> None:
    tokens = [token("vic", "viewer"), token("admin", "admin")]
    TokenAuth(tokens, {"vic": SecretStr("a"), "admin": SecretStr("b")}, SecretStr("c"))
