"""Benchmark this SCIM service against scim2-server's reference server and Keycloak's own
SCIM API, on loopback.

One command, three parts (each bounded in time, each stopping by itself):

* **compare**: ``seller-connector serve`` (gunicorn, a fresh SQLite file, or with
  ``--store postgres`` a PostgreSQL server of its own), the ``scim2-server`` reference
  server (in memory) and Keycloak 26.7.3 with ``--features=scim-api`` (from
  .cache/keycloak, in-memory H2; ``--no-keycloak`` leaves it out) are started side by
  side on free 127.0.0.1 ports and seeded with the same seller: USERS users in GROUPS
  groups. The same load generator (forked clients, keep-alive connections, closed loop)
  runs each operation at concurrency 1 and 8 against each, in rotating order, and
  reports requests per second, p50 and p99 latency, and the ratios ours/reference and
  ours/Keycloak (for the operations Keycloak has: no Bulk).
* **scale**: our service alone, seeded with 1,000, 10,000 and 100,000 users in one
  seller, and with 1,000 sellers; each operation at concurrency 1; the p50 per
  dataset is written to bench/results/scale.png.
* **soak** (``--soak SECONDS``, instead of the two above): CLIENTS clients send a mix
  of reads and writes for SECONDS; errors (must be 0), the gunicorn workers' RSS, open
  file descriptors and connections are sampled from start to end.

Results are printed as tables and saved to bench/results/scim_bench.json (or
scim_soak.json). Run from the repository root::

    .venv/bin/python bench/scim_bench.py            # compare + scale, about 8 minutes
    .venv/bin/python bench/scim_bench.py --quick    # smaller and shorter, 1-2 minutes
    .venv/bin/python bench/scim_bench.py --soak 300 # 5 minutes of mixed load

See bench/README.md for what is measured and the latest figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scimbench import bare, load, seed, servers  # noqa: E402

RESULTS = HERE / "results"
AIMS: dict[str, float] = {
    "read": 2.0,
    "write": 1.5,
    "list page of 100 (startIndex)": 20.0,
    "filter emails.value co, page of 100": 2.0,
}
"""Issue 16's aims, as our/reference requests per second: GET by id and ``userName eq`` at
least 2x, a list of 100 at least 20x, writes at least 1.5x."""
AIM_KEYCLOAK = 1.5
"""And every operation at least 1.5x Keycloak's own SCIM, where it has the operation."""


# -- The machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures ran on."""
    cpu = platform.processor() or platform.machine()
    memory = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    versions = {}
    for package in ("scim2-server", "scim2-models", "pydantic", "sqlalchemy", "flask", "gunicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_mib": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "commit": commit,
    }


def loadavg() -> float:
    """The 1-minute load average: other work on the machine skews the figures."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


# -- Tables ---------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (aligned, so that it reads in a terminal too)."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.ljust(widths[i]) for i, v in enumerate(row)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- Parts ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """The sizes and durations of a run."""

    users: int
    groups: int
    duration: float
    warmup: float
    concurrency: list[int]
    scale_sizes: list[int]
    scale_sellers: int
    scale_duration: float
    workers: int | None
    threads: int | None
    keycloak: bool = True
    store: str = "sqlite"
    bare: bool = True
    rounds: int = 1


# Durable like our SQLite (WAL, synchronous=NORMAL): commits survive a crash of the process;
# the last few may be lost if the machine loses power, but the database never corrupts.
POSTGRES_SETTINGS = "-c synchronous_commit=off -c shared_buffers=256MB"


@contextmanager
def store_url(plan: Plan) -> Iterator[str | None]:
    """None for SQLite in the state folder; else a PostgreSQL server of its own, for this run."""
    if plan.store != "postgres":
        yield None
        return
    from tests.support.postgres import PostgresServer

    server = PostgresServer(POSTGRES_SETTINGS).start()
    try:
        yield server.create_database("bench")
    finally:
        server.stop()


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _ratio(ours: float, reference: float) -> float:
    return ours / reference if reference else float("nan")


def median_round(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One target's figures in one cell over its rounds: the round of median throughput (the
    lower one of an even number; its latencies with it), the errors of every round, and each round's throughput.

    The rounds of all targets alternate, so a spell of host noise lands on every target
    rather than on whichever ran during it; the median then drops the spell.
    """
    ranked = sorted(summaries, key=lambda s: s["rps"])
    figures = dict(ranked[(len(ranked) - 1) // 2])
    figures["errors"] = sum(s["errors"] for s in summaries)
    figures["error_sample"] = next((s["error_sample"] for s in summaries if s["errors"]), "")
    figures["rounds_rps"] = [s["rps"] for s in summaries]
    return figures


def compare(plan: Plan, work: Path) -> list[dict[str, Any]]:
    """Our service, the reference and (unless --no-keycloak) Keycloak's own SCIM, seeded with
    the same seller; every operation at each concurrency, the targets interleaved."""
    with store_url(plan) as database_url:
        return _compare(plan, work, database_url)


def _compare(plan: Plan, work: Path, database_url: str | None) -> list[dict[str, Any]]:
    home = work / "compare"
    home.mkdir()
    started = time.monotonic()
    tenant = seed.seed_store(home, 1, plan.users, plan.groups, database_url=database_url)[0]
    print(
        f"seeded our store ({plan.store}): {plan.users:,} users, {plan.groups} groups "
        f"in {time.monotonic() - started:.1f} s"
    )
    ours = servers.start_ours(home, plan.workers, plan.threads, database_url)
    reference = None
    keycloak = None
    bare_server = None
    try:
        reference = servers.start_reference(home, "reference-bench-token")
        started = time.monotonic()
        ref_tenant = seed.bulk_seed(
            reference.port, reference.prefix, "reference-bench-token", plan.users, plan.groups
        )
        print(f"seeded the reference over Bulk in {time.monotonic() - started:.1f} s")
        targets: list[tuple[str, Any, seed.Tenant]] = [
            ("ours", ours, tenant),
            ("reference", reference, ref_tenant),
        ]
        if plan.keycloak:
            from scimbench.keycloak_scim import KeycloakScim

            started = time.monotonic()
            keycloak = KeycloakScim(work)
            keycloak.wait_ready()
            kc_tenant = keycloak.seed(plan.users, plan.groups)
            print(
                f"started Keycloak {servers_version()} with scim-api and seeded it by partial "
                f"import in {time.monotonic() - started:.1f} s"
            )
            targets.append(("keycloak", keycloak.server, kc_tenant))
        if plan.bare:
            database = home / "bare.sqlite3"
            bare_tenant = bare.seed(database, "bare-bench-token", plan.users, plan.groups)
            bare_server = servers.start_bare(home, database, ours.workers, ours.threads)
            targets.append(("bare", bare_server, bare_tenant))
        operations = load.operations()
        supported: dict[str, set[str]] = {}
        for label, server, who in targets:
            failures = load.smoke(server.port, server.prefix, who, plan.users, operations)
            if failures and label not in ("keycloak", "bare"):
                raise SystemExit(f"{server.name} fails the smoke test: {failures}")
            supported[label] = {op.name for op in operations if op.name not in failures}
            if failures:
                print(f"{label} does not offer: {', '.join(sorted(failures))}")
        print(
            f"ours: gunicorn {ours.workers} workers x {ours.threads} threads; "
            "reference: one threaded process"
            + ("; keycloak: its own SCIM API (JVM, in-memory H2)" if keycloak else "")
            + ("; bare: the ceiling, our server model, SQLite" if bare_server else "")
            + "\n"
        )
        rows = []
        seed_number = 1
        for op in operations:
            for concurrency in plan.concurrency:
                rounds: dict[str, list[dict[str, Any]]] = {}
                order = [t for t in targets if op.name in supported[t[0]]]
                for _ in range(plan.rounds):
                    # Rotate which target goes first, so that none always runs warmer.
                    shift = seed_number % len(order)
                    for label, server, who in order[shift:] + order[:shift]:
                        result = load.run_cell(
                            server.port,
                            server.prefix,
                            who,
                            plan.users,
                            op,
                            concurrency,
                            plan.duration,
                            plan.warmup,
                            seed_number,
                        )
                        seed_number += 1
                        rounds.setdefault(label, []).append(result.summary())
                figures = {label: median_round(summaries) for label, summaries in rounds.items()}
                ratio = _ratio(figures["ours"]["rps"], figures["reference"]["rps"])
                row = {
                    "operation": op.name,
                    "kind": op.kind,
                    "note": op.note,
                    "concurrency": concurrency,
                    "ours": figures["ours"],
                    "reference": figures["reference"],
                    "keycloak": figures.get("keycloak"),
                    "ratio_rps": round(ratio, 2),
                    "ratio_keycloak": (
                        round(_ratio(figures["ours"]["rps"], figures["keycloak"]["rps"]), 2)
                        if "keycloak" in figures
                        else None
                    ),
                    "aim": AIMS[op.name] if op.name in AIMS else AIMS[op.kind],
                    "bare": figures.get("bare"),
                    "ratio_bare": (
                        round(_ratio(figures["ours"]["rps"], figures["bare"]["rps"]), 2)
                        if "bare" in figures
                        else None
                    ),
                    "loadavg": loadavg(),
                }
                # What the aims ask of us in requests per second, and whether even the bare
                # ceiling reaches it in this very run.
                row["aim_rps"] = round(
                    max(
                        row["aim"] * figures["reference"]["rps"],
                        AIM_KEYCLOAK * figures["keycloak"]["rps"] if "keycloak" in figures else 0,
                    ),
                    1,
                )
                row["aim_above_bare"] = (
                    row["aim_rps"] > figures["bare"]["rps"] if "bare" in figures else None
                )
                row["aim_met"] = row["ratio_rps"] >= row["aim"] and (
                    row["ratio_keycloak"] is None or row["ratio_keycloak"] >= AIM_KEYCLOAK
                )
                rows.append(row)
                print(_compare_line(row), flush=True)
        return rows
    finally:
        ours.stop()
        if reference is not None:
            reference.stop()
        if keycloak is not None:
            keycloak.stop()
        if bare_server is not None:
            bare_server.stop()


def servers_version() -> str:
    from scimbench.keycloak_scim import VERSION

    return VERSION


def _compare_line(row: dict[str, Any]) -> str:
    o, r, k = row["ours"], row["reference"], row.get("keycloak")
    errors = [o["errors"], r["errors"], k["errors"] if k else 0]
    kc = (
        f" | kc {k['rps']:>8.1f}/s p50 {k['p50_ms']:>7.1f} | x{row['ratio_keycloak']:.2f}"
        if k
        else ""
    )
    b = row.get("bare")
    ceiling = f" | bare {b['rps']:>8.1f}/s (aim {row['aim_rps']:.0f}/s)" if b else ""
    return (
        f"{row['operation']:<38} c={row['concurrency']}  ours {o['rps']:>8.1f}/s "
        f"p50 {o['p50_ms']:>7.1f} p99 {o['p99_ms']:>7.1f} | ref {r['rps']:>8.1f}/s "
        f"p50 {r['p50_ms']:>7.1f} | x{row['ratio_rps']:.2f}{kc}{ceiling}"
        + (f"  errors {'/'.join(map(str, errors))}" if any(errors) else "")
    )


def compare_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table; an errors column only when there were errors."""
    keycloak = any(r.get("keycloak") for r in rows)
    errors = any(
        r["ours"]["errors"] or r["reference"]["errors"] or (r.get("keycloak") or {}).get("errors")
        for r in rows
    )
    headers = ["operation", "c", "ours req/s", "ours p50 ms", "ours p99 ms", "ref req/s"]
    if keycloak:
        headers.append("Keycloak req/s")
    headers.append("ours/ref")
    if keycloak:
        headers.append("ours/Keycloak")
    headers.append("aims met")
    bare_ = any(r.get("bare") for r in rows)
    if bare_:
        headers += ["aim req/s", "bare req/s", "ours/bare"]
    body = []
    for r in rows:
        k = r.get("keycloak")
        line: list[Any] = [
            r["operation"],
            r["concurrency"],
            r["ours"]["rps"],
            r["ours"]["p50_ms"],
            r["ours"]["p99_ms"],
            r["reference"]["rps"],
        ]
        if keycloak:
            line.append(k["rps"] if k else "n/a")
        line.append(f"{r['ratio_rps']:.2f}x")
        if keycloak:
            line.append(f"{r['ratio_keycloak']:.2f}x" if k else "n/a")
        line.append("yes" if r["aim_met"] else "no")
        if bare_:
            b = r.get("bare")
            line += [
                r["aim_rps"],
                b["rps"] if b else "n/a",
                f"{r['ratio_bare']:.2f}x" if b else "n/a",
            ]
        if errors:
            line.append(
                f"{r['ours']['errors']}/{r['reference']['errors']}/{(k or {}).get('errors', '-')}"
            )
        body.append(line)
    return table([*headers, "errors ours/ref/kc"] if errors else headers, body)


def scale(plan: Plan, work: Path) -> list[dict[str, Any]]:
    """Our service alone, on growing datasets: one seller of each size, then many sellers."""
    datasets: list[tuple[str, int, int]] = [
        (f"{size:,} users, 1 seller", 1, size) for size in plan.scale_sizes
    ]
    if plan.scale_sellers:
        datasets.append((f"{plan.scale_sellers:,} sellers", plan.scale_sellers, 100))
    operations = [*load.operations()[:4], load.WORK_EMAIL, load.CURSOR, *load.operations()[4:]]
    rows = []
    for n, (label, sellers, users) in enumerate(datasets):
        home = work / f"scale{n}"
        home.mkdir()
        started = time.monotonic()
        if sellers == 1:
            tenant = seed.seed_store(home, 1, users, max(5, users // 20))[0]
            measured_users = users
        else:
            # The measured seller has 1,000 users among the others' 100 each.
            tenant = seed.seed_store(home, sellers, users, 5, first_users=1000, first_groups=50)[0]
            measured_users = 1000
        seeded = time.monotonic() - started
        total = users * (sellers - 1) + measured_users if sellers > 1 else users
        print(f"\n{label}: {total:,} users seeded in {seeded:.1f} s")
        server = servers.start_ours(home, plan.workers, plan.threads)
        try:
            failures = load.smoke(server.port, server.prefix, tenant, measured_users, operations)
            if failures:
                raise SystemExit(f"{label}: smoke test failed: {failures}")
            for op in operations:
                result = load.run_cell(
                    server.port,
                    server.prefix,
                    tenant,
                    measured_users,
                    op,
                    1,
                    plan.scale_duration,
                    min(plan.warmup, 0.5),
                    1000 + n * 100 + len(rows),
                    min_requests=3,
                )
                row = {
                    "dataset": label,
                    "sellers": sellers,
                    "seller_users": measured_users,
                    "total_users": total,
                    "operation": op.name,
                    "seed_seconds": round(seeded, 1),
                    **result.summary(),
                }
                rows.append(row)
                print(
                    f"  {op.name:<38} p50 {row['p50_ms']:>8.2f} ms  p99 {row['p99_ms']:>8.2f} ms"
                    f"  {row['rps']:>7.1f}/s"
                    + (f"  errors {row['errors']}" if row["errors"] else ""),
                    flush=True,
                )
        finally:
            server.stop()
    return rows


def scale_table(rows: list[dict[str, Any]]) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    ops = list(dict.fromkeys(r["operation"] for r in rows))
    p50 = {(r["dataset"], r["operation"]): r["p50_ms"] for r in rows}
    return table(
        ["p50 ms (c=1)", *datasets],
        [[op, *(p50.get((d, op), float("nan")) for d in datasets)] for op in ops],
    )


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """p50 latency against the seller's size, one line per operation; many sellers beside."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[test]'): no plot")
        return False
    single = [r for r in rows if r["sellers"] == 1]
    many = [r for r in rows if r["sellers"] > 1]
    ops = list(dict.fromkeys(r["operation"] for r in rows))
    figure, axes = plt.subplots(
        1, 2, figsize=(14, 7.5), gridspec_kw={"width_ratios": [3, 2]}, constrained_layout=True
    )
    left, right = axes
    for op in ops:
        points = sorted((r["seller_users"], r["p50_ms"]) for r in single if r["operation"] == op)
        if points:
            left.plot(*zip(*points, strict=True), marker="o", label=op)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("users in the seller")
    left.set_ylabel("p50 latency, ms (concurrency 1)")
    left.set_title("One seller, growing")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    if many:
        base = {r["operation"]: r["p50_ms"] for r in single if r["seller_users"] == 1000}
        multi = {r["operation"]: r["p50_ms"] for r in many}
        names = [op for op in ops if op in multi]
        positions = range(len(names))
        width = 0.4
        right.barh(
            [p - width / 2 for p in positions],
            [base.get(n, 0) for n in names],
            width,
            label="1,000 users, the only seller",
        )
        right.barh(
            [p + width / 2 for p in positions],
            [multi[n] for n in names],
            width,
            label=f"1,000 users, among {many[0]['total_users']:,} users of {many[0]['sellers']:,} sellers",
        )
        right.set_yticks(list(positions), names, fontsize=8)
        right.set_xscale("log")
        right.set_xlabel("p50 latency, ms")
        right.set_title("Many sellers")
        right.legend(fontsize=8)
        right.invert_yaxis()
    else:
        right.set_visible(False)
    figure.suptitle("seller-connector SCIM: time per request as data grows")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# -- Soak --------------------------------------------------------------------------------------


def soak(plan: Plan, seconds: float, clients: int, work: Path) -> dict[str, Any]:
    """Mixed reads and writes from ``clients`` clients for ``seconds``; resources sampled."""
    home = work / "soak"
    home.mkdir()
    tenant = seed.seed_store(home, 1, plan.users, plan.groups)[0]
    server = servers.start_ours(home, plan.workers, plan.threads)
    samples: list[dict[str, Any]] = []

    def sample(phase: str) -> dict[str, Any]:
        workers = server.worker_pids()
        fds = [servers.fd_counts(pid) for pid in workers]
        entry = {
            "t": round(time.monotonic() - began, 1),
            "phase": phase,
            "workers": len(workers),
            "rss_mib": round(sum(servers.rss_mib(pid) for pid in workers), 1),
            "anon_mib": round(sum(servers.rss_mib(pid, "RssAnon") for pid in workers), 1),
            "anon_mib_each": [round(servers.rss_mib(pid, "RssAnon"), 1) for pid in workers],
            "fds": sum(f for f, _ in fds),
            "sockets": sum(s for _, s in fds),
            "connections": servers.established(server.port),
        }
        samples.append(entry)
        return entry

    try:
        failures = load.smoke(server.port, server.prefix, tenant, plan.users, load.operations())
        if failures:
            raise SystemExit(f"smoke test failed: {failures}")
        began = time.monotonic()
        sample("idle before")
        outcome: dict[str, load.CellResult] = {}
        warmup = min(30.0, max(2.0, seconds / 10))

        def run() -> None:
            outcome["result"] = load.run_cell(
                server.port,
                server.prefix,
                tenant,
                plan.users,
                load.MIXED,
                clients,
                seconds,
                warmup,
                4242,
            )

        runner = threading.Thread(target=run)
        runner.start()
        interval = max(1.0, min(15.0, seconds / 20))
        time.sleep(0.3 + warmup)
        first = sample("load")
        print(f"soak: {clients} clients for {seconds:.0f} s after {warmup:.0f} s of warm-up")
        print(f"  start: {_soak_line(first)}")
        while runner.is_alive():
            runner.join(timeout=interval)
            if runner.is_alive():
                entry = sample("load")
                print(f"  t={entry['t']:>6.1f}s {_soak_line(entry)}", flush=True)
        time.sleep(3)
        idle = sample("idle after")
        print(f"  after: {_soak_line(idle)}")
        result = outcome["result"]
    finally:
        server.stop()
    under_load = [s for s in samples if s["phase"] == "load"]
    third = max(1, len(under_load) // 3)
    early, late = under_load[:third], under_load[-third:]
    # Private memory swings with each large response: compare the medians of the first
    # and last thirds. (VmRSS also counts the database pages SQLite maps: they grow with
    # what has been read, and are the kernel's to reclaim.)
    growth = statistics.median(s["anon_mib"] for s in late) - statistics.median(
        s["anon_mib"] for s in early
    )
    early_rss = statistics.median(s["anon_mib"] for s in early)
    verdict = {
        "errors_zero": result.errors == 0,
        "anon_early_mib": round(early_rss, 1),
        "anon_growth_mib": round(growth, 1),
        "rss_stable": growth <= max(20.0, 0.10 * early_rss),
        "fds_growth": max(s["fds"] for s in late) - max(s["fds"] for s in early),
        "fds_stable": max(s["fds"] for s in late) <= max(s["fds"] for s in early) + 2,
        "connections_closed": idle["connections"] == 0,
    }
    return {
        "seconds": seconds,
        "clients": clients,
        "mix": {build.__name__: weight for build, weight in load.MIX},
        "workers": server.workers,
        "threads": server.threads,
        "result": result.summary(),
        "samples": samples,
        "verdict": verdict,
    }


def _soak_line(entry: dict[str, Any]) -> str:
    return (
        f"workers private memory {entry['anon_mib']:.1f} MiB {entry['anon_mib_each']} "
        f"(RSS {entry['rss_mib']:.1f}), fds {entry['fds']}, sockets {entry['sockets']}, "
        f"connections {entry['connections']}"
    )


# -- Main ---------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark the SCIM service against scim2-server's reference server and "
            "Keycloak's own SCIM (loopback only)."
        ),
    )
    parser.add_argument(
        "--users", type=int, help="Users of the compared seller (10,000; quick 2,000)."
    )
    parser.add_argument(
        "--groups", type=int, help="Groups of the compared seller (500; quick 100)."
    )
    parser.add_argument(
        "--duration", type=float, help="Seconds measured per cell and round (2; quick 1)."
    )
    parser.add_argument(
        "--warmup", type=float, help="Seconds of warm-up per cell and round (0.5; quick 0.3)."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="Compare: rounds per cell, the targets alternating; each keeps its median (3; "
        "quick 1).",
    )
    parser.add_argument(
        "--concurrency", default="1,8", help="Concurrency levels, comma-separated (1,8)."
    )
    parser.add_argument(
        "--scale-sizes",
        help="Users per seller of the scale datasets (1000,10000,100000; quick 1000,10000).",
    )
    parser.add_argument(
        "--scale-sellers",
        type=int,
        help="Sellers of the many-sellers dataset (1000; quick 100; 0: none).",
    )
    parser.add_argument(
        "--scale-duration", type=float, help="Seconds per scale cell (2; quick 0.7)."
    )
    parser.add_argument(
        "--part", choices=["all", "compare", "scale"], default="all", help="What to run (all)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="Smaller data, shorter cells: 1-2 minutes."
    )
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="Run the soak instead, for SECONDS."
    )
    parser.add_argument("--clients", type=int, default=8, help="Soak clients (8).")
    parser.add_argument("--workers", type=int, help="gunicorn workers (serve's default).")
    parser.add_argument(
        "--threads", type=int, help="gunicorn threads per worker (serve's default)."
    )
    parser.add_argument("--output", type=Path, help="JSON file (bench/results/scim_bench.json).")
    parser.add_argument(
        "--no-keycloak",
        dest="keycloak",
        action="store_false",
        help="Leave out Keycloak's own SCIM (started from .cache/keycloak by default).",
    )
    parser.add_argument(
        "--no-bare",
        dest="bare",
        action="store_false",
        help="Leave out the bare ceiling (bench/scimbench/bare.py: Flask and SQLite, no rules).",
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="Our store: SQLite in the state folder (default) or a PostgreSQL server of its own.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the temporary folder (logs, databases)."
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    sizes = args.scale_sizes or ("1000,10000" if quick else "1000,10000,100000")
    return Plan(
        users=args.users or (2000 if quick else 10_000),
        groups=args.groups if args.groups is not None else (100 if quick else 500),
        duration=args.duration or (1.0 if quick else 2.0),
        warmup=args.warmup if args.warmup is not None else (0.3 if quick else 0.5),
        concurrency=[int(c) for c in args.concurrency.split(",") if c.strip()],
        scale_sizes=[int(s) for s in sizes.split(",") if s.strip()],
        scale_sellers=args.scale_sellers
        if args.scale_sellers is not None
        else (100 if quick else 1000),
        scale_duration=args.scale_duration or (0.7 if quick else 2.0),
        workers=args.workers,
        threads=args.threads,
        keycloak=args.keycloak,
        bare=args.bare,
        store=args.store,
        rounds=args.rounds or (1 if quick else 3),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = make_plan(args)
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_mib']:,} MiB, "
        f"Python {info['python']}, SQLite {info['sqlite']}, load average {loadavg():.2f}"
    )
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "plan": vars(plan),
        "loadavg_start": loadavg(),
    }
    started = time.monotonic()
    with workspace(args.keep) as work:
        if args.soak:
            output = args.output or RESULTS / "scim_soak.json"
            report["soak"] = soak(plan, args.soak, args.clients, work)
            verdict = report["soak"]["verdict"]
            print(json.dumps(report["soak"]["result"]))
            print(json.dumps(verdict))
            ok = all(verdict[k] for k in ("errors_zero", "rss_stable", "fds_stable"))
            ok = ok and verdict["connections_closed"]
        else:
            output = args.output or RESULTS / "scim_bench.json"
            ok = True
            if args.part in ("all", "compare"):
                report["compare"] = compare(plan, work)
                print("\n" + compare_table(report["compare"]))
                met = sum(r["aim_met"] for r in report["compare"])
                print(
                    "aims (GET and userName eq >= 2x, list of 100 >= 20x, writes >= 1.5x the "
                    f"reference; every operation >= {AIM_KEYCLOAK}x Keycloak): met in {met} of "
                    f"{len(report['compare'])} cells"
                )
                above = [r for r in report["compare"] if r.get("aim_above_bare")]
                if any(r.get("bare") for r in report["compare"]):
                    print(
                        f"cells whose aim lies above the bare ceiling of this run: {len(above)}"
                        + "".join(f"\n  {r['operation']} c={r['concurrency']}" for r in above)
                    )
                ok = not any(
                    r["ours"]["errors"] or r["reference"]["errors"] for r in report["compare"]
                )
            if args.part in ("all", "scale"):
                report["scale"] = scale(plan, work)
                print("\n" + scale_table(report["scale"]))
                png = RESULTS / "scale.png"
                if plot(report["scale"], png):
                    report["scale_plot"] = str(png.relative_to(ROOT))
                    print(f"plot: {png}")
                ok = ok and not any(r["errors"] for r in report["scale"])
    report["seconds"] = round(time.monotonic() - started, 1)
    report["loadavg_end"] = loadavg()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\n{report['seconds']:.0f} s; results in {output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
