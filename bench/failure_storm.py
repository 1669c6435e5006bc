"""A failure storm against the default deployment: every run succeeds, or every run fails.

One `payhook serve` with its in-process worker on SQLite (`sqlite_synchronous = "full"`,
the default deployment), payhook-registration enabled, gets `--events` signed
`payment_intent.succeeded` deliveries over `--concurrency` keep-alive connections (closed
loop), one per order 1..N. The modes differ only in what the handler meets:

* `succeed`: the N orders exist; every run pays its order.
* `fail`: no order exists; every run gives up at once (`payhook.GiveUp`, dead).
* `error`: the orders exist but every intent lacks `amount_received`; every run raises a
  KeyError (a broken plugin) and is retried with back-off.
* `ingest`: `serve --no-worker`; runs are stored, never run: the CPU a delivery costs alone.

Per mode it reports the answers per second while runs go on, and the serve process's CPU per
event from the first request until every run has ended its first attempt; less `ingest`'s, that
is the CPU a run costs. Each (core, mode) gets a fresh database and process; rounds alternate
their order, so the load of a shared machine drifts over all of them alike.

    .venv/bin/python bench/failure_storm.py --events 1500 --repeat 3 \\
        --core HEAD --core /tmp/payhook-before --json-out bench/out/storm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from cpuacct import snapshot  # noqa: E402
from loadgen import Prepared, new_loop, run_level  # noqa: E402
from servers import HOST, Core, core_from, free_port, plugin_env, start_server  # noqa: E402
from vs_original import SECRET, TENANT, create_orders  # noqa: E402

MODES = ("ingest", "succeed", "fail", "error")
PLUGINS = ["registration"]
HANDLED = "payment_intent.succeeded"
# A run has ended its first attempt: succeeded, dead, or failed and waiting for its retry.
ENDED = ("succeeded", "dead", "failed", "skipped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1500, help="deliveries (and orders) per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument(
        "--modes", default="ingest,succeed,fail", help=f"comma-separated, of {','.join(MODES)}"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--core",
        action="append",
        default=None,
        help="a git revision or a checkout whose core/ serve runs (repeatable); default: the installed one",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds allowed for the load, and for the runs"
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (logs, exported cores)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    args.modes = args.modes.split(",")
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    return args


def build_requests(count: int, port: int, mode: str) -> list[Prepared]:
    """One signed delivery per order 1..count, as Stripe sends a paid intent."""
    from payhook.receive.verification import sign
    from payhook.testing.samples import fresh_event_id, load_event

    template = load_event(HANDLED)
    prepared = []
    for number in range(1, count + 1):
        intent = {**template["data"]["object"], "id": f"pi_storm_{number}", "amount": 45000}
        intent.update(currency="usd", metadata={"order_id": str(number)}, amount_received=45000)
        if mode == "error":
            del intent["amount_received"]  # the handler's KeyError: a broken plugin
        event = {**template, "id": fresh_event_id(), "data": {"object": intent}}
        body = json.dumps(event).encode()
        head = (
            f"POST /{TENANT} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        prepared.append(Prepared(TENANT, event["id"], True, head.encode() + body))
    return prepared


def write_config(folder: Path) -> Path:
    config = folder / "payhook.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{folder}/payhook.db"\nsqlite_synchronous = "full"\n'
        f'[tenants.{TENANT}]\nwebhook_secrets = ["{SECRET}"]\nplugins = ["registration"]\n',
        encoding="utf-8",
    )
    return config


def store_counts(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM payhook_handler_run GROUP BY status").fetchall()
        )
        rows, text = conn.execute(
            "SELECT count(*), coalesce(sum(length(message) + length(traceback)), 0) FROM payhook_run_failure"
        ).fetchone()
        events = conn.execute("SELECT count(*) FROM payhook_event").fetchone()[0]
    return {"runs": statuses, "failure_rows": rows, "failure_chars": text, "events": events}


def runs_ended(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        marks = ",".join("?" for _ in ENDED)
        return int(
            conn.execute(
                f"SELECT count(*) FROM payhook_handler_run WHERE status IN ({marks})", ENDED
            ).fetchone()[0]
        )


def measure(
    core: Core | None, mode: str, events: int, concurrency: int, timeout: float, work: Path
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"payhook-storm-{mode}-", dir=work) as name:
        folder = Path(name)
        config = write_config(folder)
        create_orders(config, 0 if mode == "fail" else events)
        port = free_port()
        server = start_server(config, port, folder, PLUGINS, worker=mode != "ingest", core=core)
        try:
            requests = build_requests(events, port, mode)
            machine = snapshot()
            cpu_before = server.cpu_seconds()
            loop = new_loop()
            try:
                level = loop.run_until_complete(run_level(requests, concurrency, HOST, port, timeout))
            finally:
                loop.close()
            cpu_answered = server.cpu_seconds()
            ended = events if mode == "ingest" else 0
            deadline = time.monotonic() + timeout
            while ended < events and time.monotonic() < deadline:
                time.sleep(0.05)
                ended = runs_ended(folder / "payhook.db")
            cpu_after = server.cpu_seconds()
            seconds = max(level.seconds, 1e-9)
            busy, _ = snapshot().cores_since(machine, time.monotonic() - level.started)
            server.check_alive()
        finally:
            server.stop()
        counts = store_counts(folder / "payhook.db")
    if ended < events:
        raise SystemExit(f"{mode}: only {ended} of {events} runs ended their first attempt in {timeout:.0f}s")
    if level.errors or counts["events"] != events:
        raise SystemExit(
            f"{mode}: {level.errors} answers were not 200, {counts['events']} of {events} stored"
        )
    return {
        "mode": mode,
        "answers_per_s": round(events / seconds, 1),
        "p99_ms": round(level.percentile_ms(99), 2),
        "cpu_ms_per_event": round((cpu_after - cpu_before) * 1000 / events, 3),
        "cpu_ms_per_event_answering": round((cpu_answered - cpu_before) * 1000 / events, 3),
        "machine_cores": round(busy, 2),
        **counts,
    }


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(result[key] for result in results))


def summarise(rounds: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for label, modes in rounds.items():
        rows = {
            mode: {
                "answers_per_s": median_of(results, "answers_per_s"),
                "answers_per_s_rounds": [result["answers_per_s"] for result in results],
                "cpu_ms_per_event": median_of(results, "cpu_ms_per_event"),
                "p99_ms": median_of(results, "p99_ms"),
                "failure_rows": results[-1]["failure_rows"],
                "failure_chars": results[-1]["failure_chars"],
                "runs": results[-1]["runs"],
            }
            for mode, results in modes.items()
        }
        ingest = rows.get("ingest", {}).get("cpu_ms_per_event")
        for row in rows.values():
            row["cpu_ms_per_run"] = round(row["cpu_ms_per_event"] - ingest, 3) if ingest is not None else None
        succeed = rows.get("succeed")
        for mode, row in rows.items():
            if succeed and mode not in ("succeed", "ingest"):
                row["answers_vs_succeed"] = round(row["answers_per_s"] / succeed["answers_per_s"], 2)
                if row["cpu_ms_per_run"] is not None and succeed["cpu_ms_per_run"]:
                    row["run_cost_vs_succeed"] = round(row["cpu_ms_per_run"] / succeed["cpu_ms_per_run"], 2)
        summary[label] = rows
    return summary


def markdown(summary: dict[str, Any], events: int, repeat: int) -> str:
    lines = [
        f"{events} deliveries per measurement, median of {repeat} rounds (alternating order)",
        "",
        "| core | mode | answers/s (rounds) | vs succeed | CPU ms/event | CPU ms/run | run cost vs succeed "
        "| failure rows | failure text (chars) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, rows in summary.items():
        for mode, row in rows.items():
            rounds = ", ".join(f"{rate:.0f}" for rate in row["answers_per_s_rounds"])
            per_run = (
                "" if row["cpu_ms_per_run"] is None or mode == "ingest" else f"{row['cpu_ms_per_run']:.3f}"
            )
            versus = row.get("answers_vs_succeed", "")
            lines.append(
                f"| {label} | {mode} | {row['answers_per_s']:.0f} ({rounds}) | {versus} "
                f"| {row['cpu_ms_per_event']:.3f} | {per_run} | {row.get('run_cost_vs_succeed', '')} "
                f"| {row['failure_rows']} | {row['failure_chars']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="payhook-storm-"))
    work.mkdir(parents=True, exist_ok=True)
    # The orders are made by this process, with the same plugins as serve's.
    os.environ["PAYHOOK_DISABLED_PLUGINS"] = plugin_env(PLUGINS)["PAYHOOK_DISABLED_PLUGINS"]
    cores: list[Core | None] = [core_from(spec, work) for spec in args.core] if args.core else [None]
    labels = [core.label if core is not None else "installed" for core in cores]
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        label: {mode: [] for mode in args.modes} for label in labels
    }
    combos = [(core, label, mode) for core, label in zip(cores, labels, strict=True) for mode in args.modes]
    for number in range(args.repeat):
        for core, label, mode in combos if number % 2 == 0 else list(reversed(combos)):
            result = measure(core, mode, args.events, args.concurrency, args.timeout, work)
            rounds[label][mode].append(result)
            print(
                f"round {number + 1} {label} {mode}: {result['answers_per_s']:.0f} answers/s, "
                f"{result['cpu_ms_per_event']:.3f} CPU ms/event, machine {result['machine_cores']} cores",
                file=sys.stderr,
            )
    summary = summarise(rounds)
    output = {
        "events": args.events,
        "repeat": args.repeat,
        "modes": args.modes,
        "summary": summary,
        "rounds": rounds,
    }
    text = json.dumps(output, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)
    table = markdown(summary, args.events, args.repeat)
    print(table, file=sys.stderr)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
