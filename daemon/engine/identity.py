"""Who is asking: an API token's name and role, or a Slack user mapped through the approver groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "approver", "admin"]
_RANK = {"viewer": 0, "approver": 1, "admin": 2}


@dataclass(frozen=True)
class Identity:
    name: str
    """A token name, or slack:<user id>."""
    role: Role
    via: str = "api"
    """api | cli | slack | system"""
    display: str | None = None

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


SYSTEM = Identity(name="runbookd", role="admin", via="system")
