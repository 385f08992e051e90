"""The runbook model: schema (pydantic), loader with file:line errors, and sandboxed templating."""
