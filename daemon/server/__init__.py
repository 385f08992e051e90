"""The HTTP server: Alertmanager intake, the API, Slack endpoints, metrics and health."""
