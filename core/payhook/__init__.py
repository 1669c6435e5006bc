"""payhook: Stripe webhooks for many tenants, handled by plugins, exactly once."""

from .app import Payhook, PayhookApp, create_app
from .config import Config, ConfigError, TenantConfig, load_config
from .context import GiveUp, HandlerContext, RetryLater, Skip
from .hookspecs import hookimpl, hookspec
from .models import Event, HandlerRun, RunFailure, RunStatus
from .store import Store, StoreUnavailable
from .types import Handler, StoredEvent
from .verification import SignatureError, verify_signature

__all__ = [
    "Config",
    "ConfigError",
    "Event",
    "GiveUp",
    "Handler",
    "HandlerContext",
    "HandlerRun",
    "Payhook",
    "PayhookApp",
    "RetryLater",
    "RunFailure",
    "RunStatus",
    "SignatureError",
    "Skip",
    "Store",
    "StoreUnavailable",
    "StoredEvent",
    "TenantConfig",
    "create_app",
    "hookimpl",
    "hookspec",
    "load_config",
    "verify_signature",
]
