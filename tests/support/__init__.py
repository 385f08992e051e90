"""Reusable test infrastructure: real Prometheus, Alertmanager, moto S3 and runbookd processes on loopback.

Import as ``from support.prom import PrometheusServer`` (``tests/`` is on ``sys.path`` via tests/conftest.py).
Nothing here ever talks to anything but 127.0.0.1.
"""
