"""No secret (a webhook secret, the operator token, a plugin's secret setting) appears in any
page, metric, log line or command output.

Everything here runs with the secrets set, through the paths that report problems too (a
wrong signature, a failing handler, a configuration with mistakes), and every output is
searched for each secret.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from payhook import logs
from payhook.cli import main
from payhook.config import LoggingConfig, OperatorConfig
from payhook.operator import create_operator_app
from payhook.testing.samples import load_event

from .helpers import RecordingPlugin, create_effect_table

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

WEBHOOK_SECRET = "whsec_SECRET_webhook_0f9e8d7c6b5a"
OLD_WEBHOOK_SECRET = "whsec_SECRET_rolled_out_1a2b3c4d"
OPERATOR_TOKEN = "SECRET_operator_token_5e6f7a8b9c"
PLUGIN_SECRET = "SECRET_plugin_api_key_2d3e4f5a6b"
SECRETS = (WEBHOOK_SECRET, OLD_WEBHOOK_SECRET, OPERATOR_TOKEN, PLUGIN_SECRET)
ENV = {
    "SHOP_WHSEC": WEBHOOK_SECRET,
    "SHOP_WHSEC_OLD": OLD_WEBHOOK_SECRET,
    "OPS_TOKEN": OPERATOR_TOKEN,
    "SHOP_API_KEY": PLUGIN_SECRET,
}


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a secret"
        # Nor a recognisable part of one (a secret cut short in a message).
        assert secret[:16] not in text, f"{where} shows the start of a secret"


@pytest.fixture
def captured_logs(tmp_path: Path) -> Iterator[Path]:
    """Every log line of the test, as JSON and as text, in one file."""
    path = tmp_path / "all.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure(LoggingConfig(format="json", level="debug"))
    with path.open("w") as sink:
        text = logging.StreamHandler(sink)
        text.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
        as_json = logging.StreamHandler(sink)
        as_json.setFormatter(logs.JsonFormatter())
        root.handlers[:] = [text, as_json]
        try:
            yield path
        finally:
            root.handlers[:], level = saved
            root.setLevel(level)


def test_no_secret_anywhere(
    make_payhook: Any, payhook_database_url: str, tmp_path: Path, captured_logs: Path
) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("ledger offline") if n == 1 else None)
    tenants = {"shop": {"plugins": ["rec"], "plugin_config": {"rec": {"api_key": PLUGIN_SECRET}}}}
    harness = make_payhook(
        {"rec": plugin}, tenants=tenants, secret=WEBHOOK_SECRET, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    event = load_event("payment_intent.succeeded")
    harness.deliver(event)
    harness.deliver(event)  # duplicate
    harness.deliver(
        load_event("customer.created"), secret=OLD_WEBHOOK_SECRET
    )  # a secret that no longer matches
    harness.deliver(load_event("customer.created"), tenant="nobody")
    harness.process()

    config = replace(harness.config, operator=OperatorConfig(token=OPERATOR_TOKEN))
    outputs: dict[str, str] = {"reprs": repr(config) + repr(config.tenants) + repr(config.operator)}
    with TestClient(
        create_operator_app(config, store=harness.store), base_url="https://testserver"
    ) as client:
        outputs["401 page"] = client.get("/", headers={"accept": "text/html"}).text
        outputs["wrong login"] = client.post("/login", data={"token": OPERATOR_TOKEN[:-1]}).text
        login = client.post("/login", data={"token": OPERATOR_TOKEN}, follow_redirects=False)
        outputs["login answer"] = json.dumps(dict(login.headers))
        for path in ("/", "/events", f"/events/shop/{event['id']}", "/metrics"):
            answer = client.get(path, headers={"accept": "text/html"})
            assert answer.status_code == 200, path
            outputs[f"page {path}"] = answer.text + json.dumps(dict(answer.headers))
        bearer = client.get("/metrics", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"})
        outputs["metrics"] = bearer.text

    config_file = tmp_path / "payhook.toml"
    config_file.write_text(
        f'[database]\nurl = "{payhook_database_url}"\n'
        '[operator]\ntoken = { "$env" = "OPS_TOKEN" }\n'
        '[tenants.shop]\nwebhook_secrets = [{ "$env" = "SHOP_WHSEC" }, { "$env" = "SHOP_WHSEC_OLD" }]\n'
        'plugins = ["rec"]\n'
        '[tenants.shop.plugin_config.rec]\napi_key = { "$env" = "SHOP_API_KEY" }\n'
    )
    broken_file = tmp_path / "broken.toml"
    broken_file.write_text(
        '[operator]\ntoken = { "$env" = "SHORT_TOKEN" }\n'
        '[tenants.shop]\nwebhook_secrets = [{ "$env" = "PADDED" }, { "$env" = "NOT_WHSEC" }]\n'
    )
    broken_env = {
        "SHORT_TOKEN": OPERATOR_TOKEN[:10],
        "PADDED": f" {WEBHOOK_SECRET}\n",
        "NOT_WHSEC": PLUGIN_SECRET,
    }
    commands = [
        ["events", "list"],
        ["events", "list", "--json"],
        ["events", "show", event["id"]],
        ["events", "show", event["id"], "--json"],
        ["failures"],
        ["failures", "--json"],
        ["plugins", "list"],
        ["plugins", "list", "--json"],
        ["config", "check"],
        ["config", "check", "--json"],
        ["runs", "replay", "--dry-run"],
        ["runs", "replay", "--json"],
        ["events", "prune", "--older-than-days", "0", "--json"],
    ]
    runner = CliRunner()
    for args in commands:
        result = runner.invoke(main, [*args, "--config", str(config_file)], env=ENV)
        outputs[" ".join(args)] = result.stdout + result.stderr
    for args in (["config", "check"], ["config", "check", "--json"]):
        result = runner.invoke(main, [*args, "--config", str(broken_file)], env=broken_env)
        assert result.exit_code == 1
        outputs[f"{' '.join(args)} (broken)"] = result.stdout + result.stderr

    outputs["log lines"] = captured_logs.read_text()
    # Each output is the real thing, problems included, not an empty error page.
    assert "delivery" in outputs["log lines"] and "ledger offline" in outputs["log lines"]
    assert "ledger offline" in outputs["page /"] and "invalid_signature" in outputs["metrics"]
    assert event["id"] in outputs["events list"] and "Traceback" in outputs["events show " + event["id"]]
    assert "operator.token" in outputs["config check (broken)"]
    assert "webhook_secrets[0]" in outputs["config check (broken)"]
    assert "webhook_secrets[1]" in outputs["config check (broken)"]  # the warning: not whsec_...
    for where, text in outputs.items():
        assert_no_secret(where, text)
