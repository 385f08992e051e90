"""The durable state store. SQLite (WAL) by default; every transition is committed before it is acted on."""
