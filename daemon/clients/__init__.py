"""Clients for the systems runbookd talks to. Each wraps its library's errors into daemon.errors and
puts a timeout on every call."""
