"""Notifiers: how people hear about runs (Slack). They never block or fail a run."""
