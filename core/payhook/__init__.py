"""payhook: Stripe webhooks for many tenants, handled by plugins, exactly once.

Everything a plugin author or a host application uses is importable from here, and only
what is listed in `__all__` is public: the modules behind it (the store, the tables, the
runtime, the run lifecycle) are internal and may change between releases.
"""

import contextlib

from .app import PayhookApp, create_app
from .config import Config, ConfigError, TenantConfig, load_config
from .context import GiveUp, HandlerContext, RetryLater, Skip
from .currency import UnknownCurrency, from_minor_units, quantize, to_minor_units
from .events import Event
from .hookspecs import hookimpl, hookspec
from .logs import guard_library_loggers
from .models import RunStatus, UTCDateTime, utcnow
from .operator import create_operator_app
from .plugins import PluginHost
from .settings import InvalidSetting
from .store import StoreUnavailable
from .types import HandlerFunc, Register, StoredEvent
from .verification import SignatureError, sign, verify_signature

__all__ = [
    "Config",
    "ConfigError",
    "Event",
    "GiveUp",
    "HandlerContext",
    "HandlerFunc",
    "InvalidSetting",
    "PayhookApp",
    "PluginHost",
    "Register",
    "RetryLater",
    "RunStatus",
    "SignatureError",
    "Skip",
    "StoreUnavailable",
    "StoredEvent",
    "TenantConfig",
    "UTCDateTime",
    "UnknownCurrency",
    "create_app",
    "create_operator_app",
    "from_minor_units",
    "hookimpl",
    "hookspec",
    "load_config",
    "quantize",
    "sign",
    "to_minor_units",
    "utcnow",
    "verify_signature",
]

# Public names say they are payhook's, whatever module defines them: stable reprs, and
# stored error types such as `payhook.GiveUp` that survive a refactoring of the internals.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "payhook").startswith("payhook"):
        with contextlib.suppress(AttributeError, TypeError):  # say, a typing alias
            _value.__module__ = "payhook"
del _name, _value, contextlib

# Before any plugin or host makes an HTTP call: the libraries' lines never carry a secret URL.
guard_library_loggers()
