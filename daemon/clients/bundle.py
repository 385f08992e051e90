"""The set of clients one daemon instance talks through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Clients:
    """Built once at start from the config. A system that is not configured is None; an action that needs
    it fails with a clear message (``ActionContext.need``)."""

    prometheus: Any = None
    alertmanager: Any = None
    kubernetes: Any = None
    s3: Any = None
    opensearch: Any = None
