"""payhook: Stripe webhooks for many tenants, handled by plugins, exactly once.

Everything a plugin author or a host application uses is importable from here, and only
what is listed in `__all__` is public: the modules behind it (the store, the tables, the
runtime, the run lifecycle) are internal and may change between releases.
"""

import contextlib

from payhook.config import Config, ConfigError, TenantConfig, load_config
from payhook.currency import UnknownCurrency, from_minor_units, quantize, to_minor_units
from payhook.logs import guard_library_loggers
from payhook.operator import create_operator_app
from payhook.plugins.context import GiveUp, HandlerContext, RetryLater, Skip
from payhook.plugins.hookspecs import hookimpl, hookspec
from payhook.plugins.host import PluginHost
from payhook.plugins.types import HandlerFunc, Register, StoredEvent
from payhook.receive.app import PayhookApp, create_app
from payhook.receive.verification import SignatureError, sign, verify_signature
from payhook.store.engine import StoreUnavailable
from payhook.store.models import RunStatus, UTCDateTime, utcnow
from payhook.stripe_api.events import Event
from payhook.validation import InvalidSetting

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
