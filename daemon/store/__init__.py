"""The durable state store: SQLite (embedded default) and PostgreSQL (production, several replicas) behind
one interface (``base.StateStore``); every transition is committed before it is acted on."""
