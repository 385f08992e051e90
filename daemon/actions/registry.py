"""The default action registry: every action module runbookd ships."""

from __future__ import annotations

from daemon.actions import alertmanager, notify, prometheus
from daemon.actions.base import ActionRegistry


def default_registry() -> ActionRegistry:
    return ActionRegistry([*prometheus.ACTIONS, *alertmanager.ACTIONS, *notify.ACTIONS])
