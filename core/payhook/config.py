"""Load and validate payhook's TOML configuration.

Each setting is declared once, as a field of its section's dataclass: the field's name is
the TOML key, its annotation the type accepted (with pydantic's constraints and validators),
its default the default. pydantic reads those declarations, the way payhook.settings says, so
adding a setting is adding a field.

The sections stay plain frozen dataclasses, validated only when a file is loaded: code and
tests build them directly, and `dataclasses.replace` and `fields` work on them as before.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from payhook.validation import NOT_A_KEY, problem, problems_of, toml_validator, without

__all__ = [
    "DISABLED_ENV",
    "MAX_RUNNERS",
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
    "disabled_from_env",
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

# Numbers must be greater than 0, unless a field says otherwise.
Positive = Annotated[int, Field(gt=0)]
# The most handler runners a worker may keep (`[processing] max_concurrency`): threads
# beyond this cost memory and connections for no run that could not wait in the queue.
MAX_RUNNERS = 256
PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """The configuration is invalid; each line of the message is one problem."""

    def __init__(self, problems: list[str], config: Config | None = None) -> None:
        self.problems = problems
        # What could be read despite the problems, for tools that report every problem at
        # once (`payhook config check` goes on to check the plugins); None if nothing could.
        self.config = config
        super().__init__("\n".join(problems))


def _is_env_reference(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"$env"} and isinstance(value["$env"], str)


def _from_env(reference: Mapping[str, str], info: ValidationInfo) -> str | None:
    """The variable's value; None when it is unset or empty and secrets are not required."""
    name, context = reference["$env"], info.context or {}
    value: str = context["environ"].get(name, "")
    if not value and context["require_secrets"]:
        raise problem(f"environment variable {name} is not set or empty; export it")
    return value or None


def _secret(value: Any, info: ValidationInfo) -> str | None:
    """A string or `{ "$env" = "NAME" }`; the messages never show it."""
    if not isinstance(value, str) and not _is_env_reference(value):
        raise problem('must be a string or { "$env" = "NAME" }')
    secret = _from_env(value, info) if _is_env_reference(value) else str(value)
    if secret is not None and not secret.strip():
        raise problem("is blank; give its value")
    if secret is not None and secret != secret.strip():
        # A secret read from a file or `echo` often carries its newline: a signing secret's
        # HMAC would then never match, and every delivery fail with invalid_signature.
        raise problem("has leading or trailing whitespace (a newline?); remove it")
    return secret


def _api_key(value: Any, info: ValidationInfo) -> str | None:
    key = _secret(value, info)
    if key is not None and key.startswith("whsec_"):
        # Would fail every API call with 401; the two are easy to swap in a config.
        raise problem("is a webhook signing secret (whsec_...), not an API key (sk_... or rk_...)")
    return key


def _token(value: Any, info: ValidationInfo) -> str | None:
    token = _secret(value, info)
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise problem(
            f"is shorter than {MIN_TOKEN_LENGTH} characters; use a random one, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def _listed(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise problem('must be a non-empty list of secrets or { "$env" = "NAME" } tables')
    return value


def _set(secrets: tuple[str | None, ...]) -> tuple[str, ...]:
    """Without those left unset by a command that needs none."""
    return tuple(secret for secret in secrets if secret is not None)


def _env_resolved(table: Any, info: ValidationInfo) -> Any:
    """`table` with every `{ "$env" = "NAME" }` in it, at any depth, replaced by the value."""
    errors: list[InitErrorDetails] = []

    def resolved(value: Any, loc: tuple[int | str, ...]) -> Any:
        if _is_env_reference(value):
            try:
                return _from_env(value, info)
            except PydanticCustomError as exc:
                errors.append(InitErrorDetails(type=exc, loc=loc, input=None))
        elif isinstance(value, Mapping):
            return {key: resolved(item, (*loc, key)) for key, item in value.items()}
        elif isinstance(value, list):
            return [resolved(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    table = resolved(table, ())
    if errors:
        raise ValidationError.from_exception_data("plugin_config", errors)
    return table


def _slug(slug: str) -> str:
    if not TENANT_SLUG.match(slug) or slug in RESERVED_SLUGS:
        raise problem(
            "bad tenant slug; use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (and not 'healthz')"
        )
    return slug


# Stores a host framework provides (`url = "django"`): entry points naming a Store subclass.
STORE_BACKENDS = "payhook.stores"


def _database_url(url: str) -> str:
    if url == "django" or url.startswith("django:"):
        # A host's database (payhook-django): the store named by the host's settings.
        if not entry_points(group=STORE_BACKENDS, name="django"):
            raise problem('"django" needs payhook-django installed: pip install payhook-django')
        return url
    if not url.startswith(("sqlite", "postgresql")):
        raise problem("must start with sqlite:// or postgresql+psycopg://")
    return url


def _postgres_url(url: str) -> str:
    if url and not url.startswith("postgresql"):
        raise problem("must start with postgresql+psycopg://")
    return url


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise problem(f"must be an http:// or https:// URL, got {url!r}")
    return url


Slug = Annotated[str, AfterValidator(_slug)]
Secrets = Annotated[
    tuple[Annotated[str, PlainValidator(_secret)], ...], BeforeValidator(_listed), AfterValidator(_set)
]


@dataclass(frozen=True)
class DatabaseConfig:
    url: Annotated[str, AfterValidator(_database_url)] = "sqlite:///payhook.db"
    # "normal" in WAL mode survives a crash of the process; "full" also survives power loss.
    sqlite_synchronous: Literal["normal", "full"] = "full"
    busy_timeout_ms: Annotated[int, Field(ge=0)] = 5000
    pool_size: Positive = 10
    connect_timeout: PositiveFloat = 5.0
    # PostgreSQL: where workers LISTEN for new runs, when `url` goes through a transaction
    # pooler (which cannot pass notifications on): a direct, session connection.
    # "" (the default): LISTEN on `url`.
    listen_url: Annotated[str, AfterValidator(_postgres_url)] = ""

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class IngestConfig:
    max_body_bytes: Positive = 1024 * 1024
    signature_tolerance: Positive = 300
    # Seconds for the whole body once the headers are in: a sender that stalls mid-body
    # holds a connection and a request task, so it gets 408 instead of waiting forever.
    body_timeout: PositiveFloat = 10.0
    # Seconds an ingest write may wait on the store before the delivery is answered 503.
    store_timeout: PositiveFloat = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: Positive = 8
    backoff_base: PositiveFloat = 10.0
    backoff_cap: PositiveFloat = 3600.0


@dataclass(frozen=True)
class ProcessingConfig(RetryPolicy):
    """`[processing]`: its keys, and the retry policy (the fields it inherits) of every
    plugin without one in `plugins` (`[processing.plugins.<name>]`)."""

    mode: ProcessingMode = "queued"
    plugins: Mapping[str, RetryPolicy] = field(default_factory=dict)
    lease_seconds: PositiveFloat = 60.0
    concurrency: Positive = 4
    # The runners a worker may grow to while its runs wait on the network (worker.py).
    max_concurrency: Annotated[int, Field(gt=0, le=MAX_RUNNERS)] = 32
    batch_size: Positive = 16
    poll_interval: PositiveFloat = 0.5
    worker: bool = True

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_cap)

    def retry_for(self, plugin: str) -> RetryPolicy:
        return self.plugins.get(plugin, self.retry)


def _overrides_of_processing(data: Any, handler: ValidatorFunctionWrapHandler) -> ProcessingConfig:
    """A plugin's override starts from [processing]'s policy, not the built-in one."""
    processing: ProcessingConfig = handler(data)
    given = data.get("plugins", {})  # checked by now: a table of tables
    return replace(
        processing,
        plugins={
            name: replace(processing.retry, **{key: getattr(policy, key) for key in given[name]})
            for name, policy in processing.plugins.items()
        },
    )


@dataclass(frozen=True)
class StripeConfig:
    """`[stripe]`: how every tenant's API client reaches Stripe."""

    # None: the SDK's own (https://api.stripe.com); a stripe-mock or a local fake otherwise.
    api_base: Annotated[str | None, AfterValidator(_http_url)] = None
    # The SDK retries 409, 429, 5xx and network errors itself, with backoff and Retry-After.
    max_network_retries: Annotated[int, Field(ge=0)] = 2
    timeout: PositiveFloat = 30.0
    # Calls per second per tenant that `ctx.fetch_latest()` may make (Stripe allows 25 in
    # test mode, 100 live, per account).
    rate_limit: PositiveFloat = 25.0


@dataclass(frozen=True)
class TenantConfig:
    slug: str = field(metadata=NOT_A_KEY)  # the table's name
    webhook_secrets: Secrets
    plugins: Annotated[tuple[str, ...], AfterValidator(lambda names: tuple(dict.fromkeys(names)))] = ()
    active: bool = True
    mode: ProcessingMode | None = None
    plugin_config: Mapping[str, Annotated[Mapping[str, Any], BeforeValidator(_env_resolved)]] = field(
        default_factory=dict
    )
    # Signing secrets of the tenant's thin-event destination; none: no POST /<slug>/thin.
    thin_webhook_secrets: Secrets = ()
    # The tenant's API key (a restricted one will do); None: handlers get no ctx.stripe.
    stripe_api_key: Annotated[str | None, PlainValidator(_api_key)] = field(default=None, repr=False)
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


def _named(tenants: Mapping[str, TenantConfig]) -> dict[str, TenantConfig]:
    return {slug: replace(tenant, slug=slug) for slug, tenant in tenants.items()}


@dataclass(frozen=True)
class OperatorConfig:
    """`[operator]`: the status page and metrics app that `payhook serve` also serves."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, le=65535)] = 9300
    # Guards every page and action. None only in a config loaded with require_secrets=False.
    token: Annotated[str | None, PlainValidator(_token)] = field(default=None, repr=False)


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = "text"
    level: LogLevel = "info"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    processing: Annotated[ProcessingConfig, WrapValidator(_overrides_of_processing)] = field(
        default_factory=ProcessingConfig
    )
    tenants: Annotated[Mapping[Slug, TenantConfig], AfterValidator(_named)] = field(default_factory=dict)
    # None when the file has no [operator] table: nothing extra is served.
    operator: OperatorConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stripe: StripeConfig = field(default_factory=StripeConfig)
    source: str = field(default="<config>", metadata=NOT_A_KEY)

    @property
    def enabled_plugins(self) -> frozenset[str]:
        """The plugins at least one tenant enables: those whose tables must exist."""
        return frozenset(name for tenant in self.tenants.values() for name in tenant.plugins)

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
        environ = os.environ if environ is None else environ
        context = {"environ": environ, "require_secrets": require_secrets}
        try:
            config: Config | None = _CONFIG.validate_python(data, context=context)
            problems = []
        except ValidationError as exc:
            problems = problems_of(exc.errors(), data, missing=_MISSING)
            config = _readable(data, context)
        if config is not None:
            problems += [f"{key}: {message}" for key, message in _mismatches(config, data)]
            database = replace(config.database, url=_next_to(base_dir, config.database.url))
            config = replace(config, database=database, source=source)
            _warn_about_secrets(config, data, environ)
        if problems or config is None:
            raise ConfigError([f"{source}: {problem}" for problem in problems], config)
        return config


_CONFIG = toml_validator(Config)
_MISSING = {"webhook_secrets": "list the endpoint's signing secrets (whsec_...)"}


# Plugins switched off for this process whatever the configuration enables: installed but
# never imported (their migrations are not applied either).
DISABLED_ENV = "PAYHOOK_DISABLED_PLUGINS"


def disabled_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Plugin names listed (comma-separated) in PAYHOOK_DISABLED_PLUGINS."""
    value = (os.environ if environ is None else environ).get(DISABLED_ENV, "")
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
    check: Callable[[Config], None] | None = None,
) -> Config:
    """Read and validate a TOML file; raises ConfigError naming the file and key.

    `require_secrets=False`: see `Config.from_mapping`. `check` (`PluginHost().check_config`)
    also runs on what could be read of a file with problems: its ConfigError's problems are
    then reported with the file's, every one at once.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{file}: file not found; pass --config with an existing file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML ({exc})"]) from None
    try:
        return Config.from_mapping(
            data, source=str(file), base_dir=file.parent, environ=environ, require_secrets=require_secrets
        )
    except ConfigError as exc:
        if check is None or exc.config is None:
            raise
        try:
            check(exc.config)
        except ConfigError as more:
            raise ConfigError([*exc.problems, *more.problems], exc.config) from None
        raise


def _readable(data: Mapping[str, Any], context: dict[str, Any]) -> Config | None:
    """What `data` gives once every invalid value is left out (its default then applies)."""
    lenient = {**context, "require_secrets": False}  # unset variables were reported already
    for _ in range(5):
        try:
            config: Config = _CONFIG.validate_python(data, context=lenient)
            return config
        except ValidationError as exc:
            data = without(data, [error["loc"] for error in exc.errors()])
    return None


def _mismatches(config: Config, data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Problems between keys, in what could be read."""
    policies = {"processing": config.processing.retry}
    policies |= {f"processing.plugins.{name}": policy for name, policy in config.processing.plugins.items()}
    for key, policy in policies.items():
        if policy.backoff_cap < policy.backoff_base:
            yield f"{key}.backoff_cap", "must be at least backoff_base"
    for slug, tenant in config.tenants.items():
        key, table = f"tenants.{slug}", data["tenants"][slug]
        for name in tenant.plugin_config:
            if name not in tenant.plugins:
                yield (
                    f"{key}.plugin_config.{name}",
                    f"configures plugin {name!r}, which is not in {key}.plugins; add it or remove this table",
                )
        if "thin_webhook_secrets" in table and "stripe_api_key" not in table:
            # A thin event names its object without holding it: handlers must fetch it.
            yield (
                f"{key}.thin_webhook_secrets",
                f"thin events need an API key to fetch what they refer to; set {key}.stripe_api_key",
            )
    if config.operator is not None and "token" not in data["operator"]:
        yield "operator.token", 'missing; set token = { "$env" = "PAYHOOK_OPERATOR_TOKEN" }'


def _warn_about_secrets(config: Config, data: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """A secret that does not look like what its key says loads, with a warning naming the key
    (the key as written: an earlier secret left unset does not shift its index)."""

    def value(item: Any) -> str:
        text = environ.get(item["$env"], "") if _is_env_reference(item) else item
        return text if isinstance(text, str) and text.strip() and text == text.strip() else ""

    for slug in config.tenants:
        table = data["tenants"][slug]
        for name in ("webhook_secrets", "thin_webhook_secrets"):
            items = table.get(name)
            for index, item in enumerate(items if isinstance(items, list) else []):
                if value(item) and not value(item).startswith("whsec_"):
                    log.warning(
                        "%s: tenants.%s.%s[%d]: does not start with whsec_ as Stripe's endpoint signing "
                        "secrets do; check that it is the endpoint's secret and not an API key",
                        *(config.source, slug, name, index),
                    )
        key = value(table.get("stripe_api_key"))
        if key and not key.startswith(("sk_", "rk_", "whsec_")):
            log.warning(
                "%s: tenants.%s.stripe_api_key: does not start with sk_ or rk_ as Stripe's secret "
                "and restricted keys do",
                *(config.source, slug),
            )


def _next_to(base_dir: Path | None, url: str) -> str:
    """A relative SQLite path means "next to the config file", not "wherever I was started"."""
    prefix = "sqlite:///"
    path = url.removeprefix(prefix)
    if base_dir is None or path == url or not path or path.startswith("/") or path == ":memory:":
        return url
    return prefix + str((base_dir / path).resolve())
