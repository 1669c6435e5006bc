"""Load and validate payhook's TOML configuration.

Each setting is declared once, as a field of its section's dataclass: the field's name is
the TOML key, its annotation the type accepted, its default the default. The parser reads
those declarations instead of repeating them, so adding a setting is adding a field.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = [
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "IngestConfig",
    "LoggingConfig",
    "OperatorConfig",
    "ProcessingConfig",
    "RetryPolicy",
    "StripeConfig",
    "TenantConfig",
    "load_config",
]

log = logging.getLogger("payhook.config")

ProcessingMode = Literal["queued", "inline"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
LivemodePolicy = Literal["live", "test", "both"]

# Tenants become URL path segments and log fields, so keep them boring.
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED_SLUGS = frozenset({"healthz"})

# An operator token guards replays: long enough that it cannot be guessed online.
MIN_TOKEN_LENGTH = 16

# Numeric settings must be greater than 0; a field with this metadata may also be 0.
ZERO_ALLOWED: Mapping[str, Any] = {"minimum": 0}


class ConfigError(Exception):
    """The configuration is invalid; each line of the message is one problem."""

    def __init__(self, problems: list[str], config: Config | None = None) -> None:
        self.problems = problems
        # What could be read despite the problems, for tools that report every problem at
        # once (`payhook config check` goes on to check the plugins); None if nothing could.
        self.config = config
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///payhook.db"
    # "normal" in WAL mode survives a crash of the process; "full" also survives power loss.
    sqlite_synchronous: Literal["normal", "full"] = "full"
    busy_timeout_ms: int = field(default=5000, metadata=ZERO_ALLOWED)
    pool_size: int = 10
    connect_timeout: float = 5.0

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class IngestConfig:
    max_body_bytes: int = 1024 * 1024
    signature_tolerance: int = 300
    # Seconds for the whole body once the headers are in: a sender that stalls mid-body
    # holds a connection and a request task, so it gets 408 instead of waiting forever.
    body_timeout: float = 10.0
    # Seconds an ingest write may wait on the store before the delivery is answered 503.
    store_timeout: float = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_base: float = 10.0
    backoff_cap: float = 3600.0


@dataclass(frozen=True)
class ProcessingConfig:
    mode: ProcessingMode = "queued"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    plugin_retry: Mapping[str, RetryPolicy] = field(default_factory=dict)
    lease_seconds: float = 60.0
    concurrency: int = 4
    batch_size: int = 16
    poll_interval: float = 0.5
    worker: bool = True

    def retry_for(self, plugin: str) -> RetryPolicy:
        return self.plugin_retry.get(plugin, self.retry)


@dataclass(frozen=True)
class StripeConfig:
    """`[stripe]`: how every tenant's API client reaches Stripe."""

    # None: the SDK's own (https://api.stripe.com); a stripe-mock or a local fake otherwise.
    api_base: str | None = None
    # The SDK retries 409, 429, 5xx and network errors itself, with backoff and Retry-After.
    max_network_retries: int = field(default=2, metadata=ZERO_ALLOWED)
    timeout: float = 30.0
    # Calls per second per tenant that `ctx.fetch_latest()` may make (Stripe allows 25 in
    # test mode, 100 live, per account).
    rate_limit: float = 25.0


@dataclass(frozen=True)
class TenantConfig:
    slug: str
    webhook_secrets: tuple[str, ...]
    plugins: tuple[str, ...] = ()
    active: bool = True
    mode: ProcessingMode | None = None
    plugin_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Signing secrets of the tenant's thin-event destination; none: no POST /<slug>/thin.
    thin_webhook_secrets: tuple[str, ...] = ()
    # The tenant's API key (a restricted one will do); None: handlers get no ctx.stripe.
    stripe_api_key: str | None = field(default=None, repr=False)
    # A Connect account the client acts on (the Stripe-Account header).
    stripe_account: str | None = None
    livemode: LivemodePolicy = "both"
    # The API version the tenant's endpoint is pinned to; events of another are flagged.
    api_version: str | None = None

    def __repr__(self) -> str:
        # Secrets must never reach logs or tracebacks.
        return (
            f"TenantConfig(slug={self.slug!r}, secrets={len(self.webhook_secrets)}, "
            f"thin_secrets={len(self.thin_webhook_secrets)}, "
            f"api_key={'set' if self.stripe_api_key else 'unset'}, "
            f"plugins={self.plugins!r}, active={self.active!r})"
        )

    def config_for(self, plugin: str) -> Mapping[str, Any]:
        return self.plugin_config.get(plugin, {})


@dataclass(frozen=True)
class OperatorConfig:
    """`[operator]`: the status page and metrics app that `payhook serve` also serves."""

    host: str = "127.0.0.1"
    port: int = 9300
    # Guards every page and action. None only in a config loaded with require_secrets=False.
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = "text"
    level: LogLevel = "info"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    # None when the file has no [operator] table: nothing extra is served.
    operator: OperatorConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stripe: StripeConfig = field(default_factory=StripeConfig)
    source: str = "<config>"

    def mode_for(self, tenant: TenantConfig) -> ProcessingMode:
        return tenant.mode or self.processing.mode

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "<config>",
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        require_secrets: bool = True,
    ) -> Config:
        """Build a validated config from parsed TOML (or an equivalent dict).

        With `require_secrets=False` an unset `{ "$env" = ... }` is not a problem: the value
        is left out (a secret) or None (a plugin setting, the operator token). For commands
        that never verify a signature, run on hosts that do not hold the secrets.
        """
        parser = _Parser(source, os.environ if environ is None else environ, base_dir, require_secrets)
        config = parser.parse(data)
        if parser.problems:
            raise ConfigError(parser.problems, config)
        return config


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> Config:
    """Read and validate a TOML file; raises ConfigError naming the file and key.

    `require_secrets=False`: see `Config.from_mapping`.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{file}: file not found; pass --config with an existing file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML ({exc})"]) from None
    return Config.from_mapping(
        data, source=str(file), base_dir=file.parent, environ=environ, require_secrets=require_secrets
    )


@dataclass(frozen=True)
class _Setting:
    """What a plain (scalar) field accepts, read from its declaration."""

    kind: type
    choices: tuple[Any, ...]
    minimum: float | None


@cache
def _settings(cls: type) -> dict[str, _Setting]:
    """The scalar fields of a config dataclass: the keys a TOML table sets directly."""
    # This module's names, not those of cls.__module__: payhook's public names are
    # re-homed to "payhook" for stable reprs, and "payhook" does not know ProcessingMode.
    hints = get_type_hints(cls, globalns=globals())
    found = {}
    for item in fields(cls):
        hint = _without_none(hints[item.name])
        if get_origin(hint) is Literal:
            found[item.name] = _Setting(str, get_args(hint), None)
        elif hint in (bool, int, float, str):
            found[item.name] = _Setting(hint, (), item.metadata.get("minimum"))
    return found


def _without_none(hint: Any) -> Any:
    """`X` for `X | None`: TOML has no null, so the None only means "not given"."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(item.name for item in fields(cls))


# Tables that are not a scalar field are named here; every scalar key comes from _settings.
_SECTIONS = _field_names(Config) - {"source"}
_TENANT_KEYS = _field_names(TenantConfig) - {"slug"}  # the slug is the table's name
_RETRY_KEYS = frozenset(_settings(RetryPolicy))
_PROCESSING_KEYS = frozenset(_settings(ProcessingConfig)) | _RETRY_KEYS | {"plugins"}

_INVALID = object()  # a value that was reported as a problem; its default applies


def _either(choices: tuple[Any, ...]) -> str:
    quoted = [f'"{choice}"' for choice in choices]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


def _is_env_reference(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"$env"} and isinstance(value["$env"], str)


class _Parser:
    def __init__(
        self, source: str, environ: Mapping[str, str], base_dir: Path | None, require_secrets: bool = True
    ) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = base_dir
        self.require_secrets = require_secrets
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def table(self, data: Any, key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            self.problem(key, "must be a table")
            return {}
        for unknown in sorted(set(data) - allowed):
            name = f"{key}.{unknown}" if key else unknown
            self.problem(name, f"unknown key; expected one of {', '.join(sorted(allowed))}")
        return data

    def settings(self, cls: type, table: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        """The valid values `table` gives for the scalar fields of `cls`.

        Keys that are absent or invalid are left out, so the dataclass default applies;
        invalid ones are reported.
        """
        values = {}
        for name, setting in _settings(cls).items():
            if name in table:
                value = self.check(table[name], setting, f"{prefix}.{name}")
                if value is not _INVALID:
                    values[name] = value
        return values

    def check(self, value: Any, setting: _Setting, key: str) -> Any:
        if setting.choices:
            if value in setting.choices and isinstance(value, setting.kind):
                return value
            self.problem(key, f"must be {_either(setting.choices)}, got {value!r}")
            return _INVALID
        kind = setting.kind
        # bool is an int in Python, but `max_attempts = true` is a typo, not a number.
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float, str)):
            ok = False
        elif kind is float and isinstance(value, int):
            value, ok = float(value), True
        else:
            ok = isinstance(value, kind)
        if not ok:
            self.problem(key, f"must be {kind.__name__}, got {value!r}")
            return _INVALID
        if kind in (int, float):
            if setting.minimum is None and value <= 0:
                self.problem(key, f"must be greater than 0, got {value!r}")
                return _INVALID
            if setting.minimum is not None and value < setting.minimum:
                self.problem(key, f"must be at least {setting.minimum}, got {value!r}")
                return _INVALID
        return value

    def parse(self, data: Mapping[str, Any]) -> Config:
        root = self.table(data, "", _SECTIONS)
        return Config(
            database=self.database(root.get("database", {})),
            ingest=self.ingest(root.get("ingest", {})),
            processing=self.processing(root.get("processing", {})),
            tenants=self.tenants(root.get("tenants", {})),
            operator=self.operator(root["operator"]) if "operator" in root else None,
            logging=self.logging(root.get("logging", {})),
            stripe=self.stripe(root.get("stripe", {})),
            source=self.source,
        )

    def database(self, data: Any) -> DatabaseConfig:
        table = self.table(data, "database", frozenset(_settings(DatabaseConfig)))
        config = DatabaseConfig(**self.settings(DatabaseConfig, table, "database"))
        if not config.url.startswith(("sqlite", "postgresql")):
            self.problem("database.url", "must start with sqlite:// or postgresql+psycopg://")
        return replace(config, url=self.resolve_sqlite_path(config.url))

    def resolve_sqlite_path(self, url: str) -> str:
        # A relative SQLite path means "next to the config file", not "wherever I was started".
        prefix = "sqlite:///"
        if self.base_dir is None or not url.startswith(prefix):
            return url
        path = url[len(prefix) :]
        if not path or path.startswith("/") or path == ":memory:":
            return url
        return prefix + str((self.base_dir / path).resolve())

    def ingest(self, data: Any) -> IngestConfig:
        table = self.table(data, "ingest", frozenset(_settings(IngestConfig)))
        return IngestConfig(**self.settings(IngestConfig, table, "ingest"))

    def operator(self, data: Any) -> OperatorConfig:
        table = self.table(data, "operator", frozenset(_settings(OperatorConfig)))
        scalars = {name: value for name, value in table.items() if name != "token"}
        config = OperatorConfig(**self.settings(OperatorConfig, scalars, "operator"))
        if config.port > 65535:
            self.problem("operator.port", f"must be a TCP port (1-65535), got {config.port}")
        if "token" not in table:
            self.problem("operator.token", 'missing; set token = { "$env" = "PAYHOOK_OPERATOR_TOKEN" }')
            return config
        token = self.token(table["token"], "operator.token")
        return replace(config, token=token)

    def token(self, item: Any, key: str) -> str | None:
        """The operator token: like a signing secret, and long enough not to be guessed."""
        if not isinstance(item, str) and not _is_env_reference(item):
            self.problem(key, 'must be a string or { "$env" = "NAME" }')
            return None
        token: str | None = self.resolve_env(item, key)
        if token is None:
            return None
        if token != token.strip() or not token.strip():
            self.problem(key, "is blank or has leading or trailing whitespace (a newline?); remove it")
            return None
        if len(token) < MIN_TOKEN_LENGTH:
            self.problem(
                key,
                f"is shorter than {MIN_TOKEN_LENGTH} characters; use a random one, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
            return None
        return token

    def logging(self, data: Any) -> LoggingConfig:
        table = self.table(data, "logging", frozenset(_settings(LoggingConfig)))
        return LoggingConfig(**self.settings(LoggingConfig, table, "logging"))

    def stripe(self, data: Any) -> StripeConfig:
        table = self.table(data, "stripe", frozenset(_settings(StripeConfig)))
        config = StripeConfig(**self.settings(StripeConfig, table, "stripe"))
        if config.api_base is not None and not config.api_base.startswith(("http://", "https://")):
            self.problem("stripe.api_base", f"must be an http:// or https:// URL, got {config.api_base!r}")
            config = replace(config, api_base=None)
        return config

    def retry(self, table: Mapping[str, Any], prefix: str, default: RetryPolicy) -> RetryPolicy:
        policy = replace(default, **self.settings(RetryPolicy, table, prefix))
        if policy.backoff_cap < policy.backoff_base:
            self.problem(f"{prefix}.backoff_cap", "must be at least backoff_base")
        return policy

    def processing(self, data: Any) -> ProcessingConfig:
        table = self.table(data, "processing", _PROCESSING_KEYS)
        retry = self.retry(table, "processing", RetryPolicy())
        plugin_retry: dict[str, RetryPolicy] = {}
        overrides = table.get("plugins", {})
        if not isinstance(overrides, Mapping):
            self.problem("processing.plugins", "must be a table of [processing.plugins.<name>] tables")
            overrides = {}
        for name, override in overrides.items():
            prefix = f"processing.plugins.{name}"
            # A plugin's override starts from [processing]'s policy, not the built-in one.
            plugin_retry[name] = self.retry(self.table(override, prefix, _RETRY_KEYS), prefix, retry)
        return ProcessingConfig(
            retry=retry,
            plugin_retry=plugin_retry,
            **self.settings(ProcessingConfig, table, "processing"),
        )

    def tenants(self, data: Any) -> dict[str, TenantConfig]:
        if not isinstance(data, Mapping):
            self.problem("tenants", "must be a table of [tenants.<slug>] sections")
            return {}
        tenants = {}
        for slug, body in data.items():
            key = f"tenants.{slug}"
            if not TENANT_SLUG.match(slug) or slug in RESERVED_SLUGS:
                self.problem(
                    key,
                    "bad tenant slug; use 1-63 lowercase letters, digits, '-' or '_', "
                    "starting with a letter or digit (and not 'healthz')",
                )
                continue
            tenants[slug] = self.tenant(slug, self.table(body, key, _TENANT_KEYS), key)
        return tenants

    def tenant(self, slug: str, table: Mapping[str, Any], key: str) -> TenantConfig:
        secrets = self.secrets(table.get("webhook_secrets"), f"{key}.webhook_secrets")
        plugins = table.get("plugins", [])
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            self.problem(f"{key}.plugins", 'must be a list of plugin names, e.g. ["registration"]')
            plugins = []
        plugin_config = table.get("plugin_config", {})
        if not isinstance(plugin_config, Mapping) or not all(
            isinstance(v, Mapping) for v in plugin_config.values()
        ):
            self.problem(f"{key}.plugin_config", "must be a table of [.plugin_config.<plugin>] tables")
            plugin_config = {}
        for name in plugin_config:
            if name not in plugins:
                self.problem(
                    f"{key}.plugin_config.{name}",
                    f"configures plugin {name!r}, which is not in {key}.plugins; add it or remove this table",
                )
        thin = table.get("thin_webhook_secrets")
        thin_secrets = () if thin is None else self.secrets(thin, f"{key}.thin_webhook_secrets")
        if thin is not None and "stripe_api_key" not in table:
            # A thin event names its object without holding it: handlers must fetch it.
            self.problem(
                f"{key}.thin_webhook_secrets",
                f"thin events need an API key to fetch what they refer to; set {key}.stripe_api_key",
            )
        api_key = (
            self.api_key(table["stripe_api_key"], f"{key}.stripe_api_key")
            if "stripe_api_key" in table
            else None
        )
        scalars = {name: value for name, value in table.items() if name not in ("slug", "stripe_api_key")}
        return TenantConfig(
            slug=slug,
            webhook_secrets=tuple(secrets),
            thin_webhook_secrets=tuple(thin_secrets),
            stripe_api_key=api_key,
            plugins=tuple(dict.fromkeys(plugins)),
            plugin_config={
                name: self.resolve_env(value, f"{key}.plugin_config.{name}")
                for name, value in plugin_config.items()
            },
            **self.settings(TenantConfig, scalars, key),
        )

    def api_key(self, item: Any, key: str) -> str | None:
        """A tenant's Stripe API key; like a secret, never shown in a message."""
        if not isinstance(item, str) and not _is_env_reference(item):
            self.problem(key, 'must be a string or { "$env" = "NAME" }')
            return None
        api_key: str | None = self.resolve_env(item, key)
        if api_key is None:
            return None
        if api_key != api_key.strip() or not api_key.strip():
            self.problem(key, "is blank or has leading or trailing whitespace (a newline?); remove it")
            return None
        if api_key.startswith("whsec_"):
            # Would fail every API call with 401; the two are easy to swap in a config.
            self.problem(key, "is a webhook signing secret (whsec_...), not an API key (sk_... or rk_...)")
            return None
        if not api_key.startswith(("sk_", "rk_")):
            log.warning(
                "%s: %s: does not start with sk_ or rk_ as Stripe's secret and restricted keys do",
                self.source,
                key,
            )
        return api_key

    def resolve_env(self, value: Any, key: str) -> Any:
        """`value` with every `{ "$env" = "NAME" }` in it replaced by that variable's value.

        A variable that is unset or empty is a problem (reported) and resolves to None.
        """
        if _is_env_reference(value):
            name = value["$env"]
            resolved = self.environ.get(name, "")
            if not resolved:
                if self.require_secrets:
                    self.problem(key, f"environment variable {name} is not set or empty; export it")
                return None
            return resolved
        if isinstance(value, Mapping):
            return {k: self.resolve_env(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve_env(item, f"{key}[{i}]") for i, item in enumerate(value)]
        return value

    def secrets(self, value: Any, key: str) -> list[str]:
        if value is None:
            self.problem(key, "missing; list the endpoint's signing secrets (whsec_...)")
            return []
        if not isinstance(value, list) or not value:
            self.problem(key, 'must be a non-empty list of secrets or { "$env" = "NAME" } tables')
            return []
        secrets = []
        for index, item in enumerate(value):
            secret = self.secret(item, f"{key}[{index}]")
            if secret is not None:
                secrets.append(secret)
        return secrets

    def secret(self, item: Any, key: str) -> str | None:
        """One signing secret, or None when it was reported; messages never show the secret."""
        if not isinstance(item, str) and not _is_env_reference(item):
            self.problem(key, 'must be a non-empty string or { "$env" = "NAME" }')
            return None
        # A string stays itself; a reference becomes the variable's value or None.
        secret: str | None = self.resolve_env(item, key)
        if secret is None:
            return None
        if not secret.strip():
            self.problem(key, "is blank; give the endpoint's signing secret (whsec_...)")
            return None
        if secret != secret.strip():
            # A secret read from a file or `echo` often carries its newline; the HMAC would
            # then never match and every delivery would fail with invalid_signature.
            self.problem(key, "has leading or trailing whitespace (a newline?); remove it")
            return None
        if not secret.startswith("whsec_"):
            log.warning(
                "%s: %s: does not start with whsec_ as Stripe's endpoint signing secrets do; "
                "check that it is the endpoint's secret and not an API key",
                self.source,
                key,
            )
        return secret
