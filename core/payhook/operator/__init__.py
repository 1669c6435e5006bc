"""The operator app: a status page with a replay button, and Prometheus metrics.

`create_operator_app(config)` builds it for mounting; `payhook serve` serves it on
`[operator] host:port` when the configuration has that table
(`payhook.server.operator_listener.with_operator`).
"""

from payhook.operator.app import create_operator_app

__all__ = ["create_operator_app"]
