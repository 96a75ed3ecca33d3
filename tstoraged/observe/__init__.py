"""Observability of the daemon: logs, metrics, the status snapshot and the HTTP endpoint.

- :mod:`tstoraged.observe.logging`: ``configure_logging`` (structlog + stdlib, JSON or console).
- :mod:`tstoraged.observe.ratelimit`: suppression of repeated warnings and errors.
- :mod:`tstoraged.observe.metrics`: ``Metrics``, the pipeline observer behind Prometheus and
  ``/status``.
- :mod:`tstoraged.observe.http`: ``ObservabilityServer`` serving ``/metrics``, ``/healthz``,
  ``/readyz`` and ``/status``.

Nothing here imports the pipeline, sources or config: they report into these objects.
"""
