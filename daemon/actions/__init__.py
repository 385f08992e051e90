"""Actions: what a runbook step can do. One module per system, each exporting ``ACTIONS``.

Every action is a small record (see ``base.Action``): a pydantic params model that validates untrusted
input before any request is made, a read-only/mutating flag, an idempotent flag, and the API permissions
it needs. There is no shell action.
"""
