"""runbookd: approval-gated runbooks for a Kubernetes monitoring cluster.

Layers, each importing only the ones after it:
entry points (cli, server) -> engine -> runbooks (model) -> actions -> clients -> kits.
"""

__version__ = "0.1.0"
