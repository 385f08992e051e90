"""The default action registry: every action module runbookd ships, plus configured plugin modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from daemon.actions import (
    alertmanager,
    kubernetes,
    longhorn,
    minio,
    notify,
    prometheus,
    s3,
    s3_lifecycle,
    thanos,
)
from daemon.actions import opensearch as opensearch_actions
from daemon.actions.base import Action, ActionRegistry
from daemon.errors import ConfigError


def _plugin_actions(module_name: str) -> list[Action]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"plugins: cannot import {module_name}: {exc}") from None
    actions = getattr(module, "ACTIONS", None)
    if not isinstance(actions, list) or not all(isinstance(a, Action) for a in actions):
        raise ConfigError(
            f"plugins: {module_name} must export ACTIONS, a list of actions (see daemon.actions.base)"
        )
    return actions


def default_registry(plugins: Iterable[str] = ()) -> ActionRegistry:
    actions = [
        *prometheus.ACTIONS,
        *alertmanager.ACTIONS,
        *kubernetes.ACTIONS,
        *notify.ACTIONS,
        *s3.ACTIONS,
        *thanos.ACTIONS,
        *opensearch_actions.ACTIONS,
        *longhorn.ACTIONS,
        *s3_lifecycle.ACTIONS,
        *minio.ACTIONS,
    ]
    for name in plugins:
        actions += _plugin_actions(name)
    try:
        return ActionRegistry(actions)
    except ValueError as exc:
        raise ConfigError(f"plugins: {exc}") from None
