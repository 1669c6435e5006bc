"""The operator app: a status page with a replay button, and Prometheus metrics.

`create_operator_app(config)` builds it for mounting; `payhook serve` serves it on
`[operator] host:port` when the configuration has that table (`with_operator`).
"""

from payhook.operator.app import create_operator_app
from payhook.operator.listener import with_operator

__all__ = ["create_operator_app", "with_operator"]
