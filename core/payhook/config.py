"""Load and validate payhook's TOML configuration."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "IngestConfig",
    "ProcessingConfig",
    "RetryPolicy",
    "TenantConfig",
    "load_config",
]

ProcessingMode = Literal["queued", "inline"]

# Tenants become URL path segments and log fields, so keep them boring.
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED_SLUGS = frozenset({"healthz"})


class ConfigError(Exception):
    """The configuration is invalid; each line of the message is one problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///payhook.db"
    # "normal" in WAL mode survives a crash of the process; "full" also survives power loss.
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    busy_timeout_ms: int = 5000
    pool_size: int = 10
    connect_timeout: float = 5.0

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class IngestConfig:
    max_body_bytes: int = 1024 * 1024
    signature_tolerance: int = 300


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
class TenantConfig:
    slug: str
    webhook_secrets: tuple[str, ...]
    plugins: tuple[str, ...] = ()
    active: bool = True
    mode: ProcessingMode | None = None
    plugin_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Secrets must never reach logs or tracebacks.
        return (
            f"TenantConfig(slug={self.slug!r}, secrets={len(self.webhook_secrets)}, "
            f"plugins={self.plugins!r}, active={self.active!r})"
        )

    def config_for(self, plugin: str) -> Mapping[str, Any]:
        return self.plugin_config.get(plugin, {})


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
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
    ) -> Config:
        """Build a validated config from parsed TOML (or an equivalent dict)."""
        parser = _Parser(source, os.environ if environ is None else environ, base_dir)
        config = parser.parse(data)
        if parser.problems:
            raise ConfigError(parser.problems)
        return config


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file; raises ConfigError naming the file and key."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{file}: file not found; pass --config with an existing file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML ({exc})"]) from None
    return Config.from_mapping(data, source=str(file), base_dir=file.parent, environ=environ)


_SECTIONS = {"database", "ingest", "processing", "tenants"}
_TENANT_KEYS = {"webhook_secrets", "plugins", "active", "mode", "plugin_config"}
_RETRY_KEYS = {"max_attempts", "backoff_base", "backoff_cap"}


class _Parser:
    def __init__(self, source: str, environ: Mapping[str, str], base_dir: Path | None) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def table(self, data: Any, key: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            self.problem(key, "must be a table")
            return {}
        for unknown in sorted(set(data) - allowed):
            name = f"{key}.{unknown}" if key else unknown
            self.problem(name, f"unknown key; expected one of {', '.join(sorted(allowed))}")
        return data

    def value(self, data: Mapping[str, Any], key: str, prefix: str, kind: type, default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        # bool is an int in Python, but `max_attempts = true` is a typo, not a number.
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.problem(f"{prefix}.{key}", f"must be {kind.__name__}, got {value!r}")
            return default
        return value

    def positive(self, value: float, key: str) -> None:
        if value <= 0:
            self.problem(key, f"must be greater than 0, got {value!r}")

    def parse(self, data: Mapping[str, Any]) -> Config:
        root = self.table(data, "", _SECTIONS)
        return Config(
            database=self.database(root.get("database", {})),
            ingest=self.ingest(root.get("ingest", {})),
            processing=self.processing(root.get("processing", {})),
            tenants=self.tenants(root.get("tenants", {})),
            source=self.source,
        )

    def database(self, data: Any) -> DatabaseConfig:
        keys = {"url", "sqlite_synchronous", "busy_timeout_ms", "pool_size", "connect_timeout"}
        table = self.table(data, "database", keys)
        default = DatabaseConfig()
        url = self.value(table, "url", "database", str, default.url)
        if not url.startswith(("sqlite", "postgresql")):
            self.problem("database.url", "must start with sqlite:// or postgresql+psycopg://")
        url = self.resolve_sqlite_path(url)
        synchronous = self.value(table, "sqlite_synchronous", "database", str, "normal")
        if synchronous not in ("normal", "full"):
            self.problem("database.sqlite_synchronous", 'must be "normal" or "full"')
            synchronous = "normal"
        config = DatabaseConfig(
            url=url,
            sqlite_synchronous=synchronous,
            busy_timeout_ms=self.value(table, "busy_timeout_ms", "database", int, 5000),
            pool_size=self.value(table, "pool_size", "database", int, default.pool_size),
            connect_timeout=self.value(table, "connect_timeout", "database", float, 5.0),
        )
        self.positive(config.pool_size, "database.pool_size")
        self.positive(config.connect_timeout, "database.connect_timeout")
        return config

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
        table = self.table(data, "ingest", {"max_body_bytes", "signature_tolerance"})
        default = IngestConfig()
        config = IngestConfig(
            max_body_bytes=self.value(table, "max_body_bytes", "ingest", int, default.max_body_bytes),
            signature_tolerance=self.value(
                table, "signature_tolerance", "ingest", int, default.signature_tolerance
            ),
        )
        self.positive(config.max_body_bytes, "ingest.max_body_bytes")
        self.positive(config.signature_tolerance, "ingest.signature_tolerance")
        return config

    def retry(self, table: Mapping[str, Any], prefix: str, default: RetryPolicy) -> RetryPolicy:
        policy = RetryPolicy(
            max_attempts=self.value(table, "max_attempts", prefix, int, default.max_attempts),
            backoff_base=self.value(table, "backoff_base", prefix, float, default.backoff_base),
            backoff_cap=self.value(table, "backoff_cap", prefix, float, default.backoff_cap),
        )
        self.positive(policy.max_attempts, f"{prefix}.max_attempts")
        self.positive(policy.backoff_base, f"{prefix}.backoff_base")
        if policy.backoff_cap < policy.backoff_base:
            self.problem(f"{prefix}.backoff_cap", "must be at least backoff_base")
        return policy

    def processing(self, data: Any) -> ProcessingConfig:
        keys = _RETRY_KEYS | {
            "mode",
            "lease_seconds",
            "concurrency",
            "batch_size",
            "poll_interval",
            "worker",
            "plugins",
        }
        table = self.table(data, "processing", keys)
        default = ProcessingConfig()
        mode = self.mode(table.get("mode", "queued"), "processing.mode") or "queued"
        retry = self.retry(table, "processing", default.retry)
        plugin_retry: dict[str, RetryPolicy] = {}
        overrides = table.get("plugins", {})
        if not isinstance(overrides, Mapping):
            self.problem("processing.plugins", "must be a table of [processing.plugins.<name>] tables")
            overrides = {}
        for name, override in overrides.items():
            prefix = f"processing.plugins.{name}"
            plugin_retry[name] = self.retry(self.table(override, prefix, _RETRY_KEYS), prefix, retry)
        config = ProcessingConfig(
            mode=mode,
            retry=retry,
            plugin_retry=plugin_retry,
            lease_seconds=self.value(table, "lease_seconds", "processing", float, 60.0),
            concurrency=self.value(table, "concurrency", "processing", int, default.concurrency),
            batch_size=self.value(table, "batch_size", "processing", int, default.batch_size),
            poll_interval=self.value(table, "poll_interval", "processing", float, 0.5),
            worker=self.value(table, "worker", "processing", bool, True),
        )
        for key in ("lease_seconds", "concurrency", "batch_size", "poll_interval"):
            self.positive(getattr(config, key), f"processing.{key}")
        return config

    def mode(self, value: Any, key: str) -> ProcessingMode | None:
        if value in ("queued", "inline"):
            return value  # type: ignore[no-any-return]
        self.problem(key, f'must be "queued" or "inline", got {value!r}')
        return None

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
            tenant = self.tenant(slug, self.table(body, key, _TENANT_KEYS), key)
            if tenant is not None:
                tenants[slug] = tenant
        return tenants

    def tenant(self, slug: str, table: Mapping[str, Any], key: str) -> TenantConfig | None:
        secrets = self.secrets(table.get("webhook_secrets"), f"{key}.webhook_secrets")
        plugins = table.get("plugins", [])
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            self.problem(f"{key}.plugins", 'must be a list of plugin names, e.g. ["registration"]')
            plugins = []
        mode = self.mode(table["mode"], f"{key}.mode") if "mode" in table else None
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
        return TenantConfig(
            slug=slug,
            webhook_secrets=tuple(secrets),
            plugins=tuple(dict.fromkeys(plugins)),
            active=self.value(table, "active", key, bool, True),
            mode=mode,
            plugin_config={
                name: self.resolve_env(value, f"{key}.plugin_config.{name}")
                for name, value in plugin_config.items()
            },
        )

    def resolve_env(self, value: Any, key: str) -> Any:
        """Replace every `{ "$env" = "NAME" }` in a plugin's settings with the variable's value."""
        if isinstance(value, Mapping):
            if set(value) == {"$env"} and isinstance(value["$env"], str):
                name = value["$env"]
                if not self.environ.get(name):
                    self.problem(key, f"environment variable {name} is not set or empty; export it")
                    return None
                return self.environ[name]
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
            item_key = f"{key}[{index}]"
            if isinstance(item, str) and item:
                secrets.append(item)
            elif isinstance(item, Mapping) and set(item) == {"$env"} and isinstance(item["$env"], str):
                name = item["$env"]
                secret = self.environ.get(name, "")
                if secret:
                    secrets.append(secret)
                else:
                    self.problem(item_key, f"environment variable {name} is not set or empty; export it")
            else:
                self.problem(item_key, 'must be a non-empty string or { "$env" = "NAME" }')
        return secrets
