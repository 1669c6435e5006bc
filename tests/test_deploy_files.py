"""The files in deploy/ are valid for the tools that read them, and say what the docs say.

systemd units are checked with `systemd-analyze verify`, the nginx site with `nginx -t`;
each check skips only where its tool is not installed (`apt-get install systemd nginx`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from payhook.cli import main
from payhook.config import IngestConfig

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
NGINX_SITE = ROOT / "deploy" / "nginx" / "payhook.conf"
INSTALLED_PAYHOOK = "/opt/payhook/bin/payhook"
CERTIFICATE = "/etc/letsencrypt/live/webhooks.example.org/fullchain.pem"
PRIVATE_KEY = "/etc/letsencrypt/live/webhooks.example.org/privkey.pem"


def test_the_units_are_shipped() -> None:
    assert [unit.name for unit in UNITS] == ["payhook-serve.service", "payhook-worker.service"]


def exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_each_unit_runs_an_existing_command_with_existing_options(unit: Path) -> None:
    program, *words = exec_start(unit)
    assert program == INSTALLED_PAYHOOK
    command: click.Command = main
    while isinstance(command, click.Group):
        command = command.commands[words.pop(0)]
    known = {
        name
        for param in command.params
        if isinstance(param, click.Option)
        for name in [*param.opts, *param.secondary_opts]
    }
    given = [word for word in words if word.startswith("-")]
    assert given and set(given) <= known, f"{unit.name}: unknown options {set(given) - known}"
    # The units name the configuration both ways, and the same file.
    assert "Environment=PAYHOOK_CONFIG=" + words[words.index("--config") + 1] in unit.read_text()


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart's program exists: point it at this environment's payhook.
    payhook = Path(sys.executable).with_name("payhook")
    assert payhook.exists()
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_PAYHOOK, str(payhook)))

    checked = subprocess.run(
        [analyze, "verify", *(str(tmp_path / unit.name) for unit in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # An unknown key is only a warning (exit 0): any output at all fails the test.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_systemd_analyze_catches_a_mistake(tmp_path: Path) -> None:
    """The check above would notice a misspelt key."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = tmp_path / "payhook-serve.service"
    payhook = str(Path(sys.executable).with_name("payhook"))
    unit.write_text(UNITS[0].read_text().replace(INSTALLED_PAYHOOK, payhook).replace("Restart=", "Restrt="))
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Unknown key" in checked.stderr


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx, openssl = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("openssl")
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate to test the site with")
    subprocess.run(
        [
            *(
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ),
            *("-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    site = NGINX_SITE.read_text()
    assert CERTIFICATE in site and PRIVATE_KEY in site
    site = site.replace(CERTIFICATE, str(tmp_path / "cert.pem")).replace(
        PRIVATE_KEY, str(tmp_path / "key.pem")
    )
    (tmp_path / "payhook.conf").write_text(site)
    # The site is an http-block include, as in /etc/nginx/conf.d/; nothing outside tmp_path.
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  include {tmp_path}/payhook.conf;\n}}\n"
    )

    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr and "[warn]" not in checked.stderr, checked.stderr


def directives(text: str) -> dict[str, str]:
    """`client_max_body_size 1m;  # ...` -> {"client_max_body_size": "1m"} (zone names dropped)."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"\s*([a-z_]+)\s+([^;#]*);", line)
        if match:
            name, value = match.groups()
            found[name] = re.sub(
                r"\bzone=\S+|\$binary_remote_addr|\bper_client\b|\bpayhook_per_client\b", "", value
            )
    return {name: " ".join(value.split()) for name, value in found.items()}


def test_the_site_keeps_the_limits_docs_http_md_gives() -> None:
    http_md = (ROOT / "docs" / "http.md").read_text(encoding="utf-8")
    [snippet] = re.findall(r"```nginx\n(.*?)```", http_md, re.DOTALL)
    documented, shipped = directives(snippet), directives(NGINX_SITE.read_text())
    assert documented and {name: shipped.get(name) for name in documented} == documented
    # And at or below payhook's own defaults, so the proxy answers first.
    ingest = IngestConfig()
    assert shipped["client_max_body_size"] == "1m" and ingest.max_body_bytes >= 1024 * 1024
    assert float(shipped["client_body_timeout"].removesuffix("s")) <= ingest.body_timeout
