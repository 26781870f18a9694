"""Profile the SCIM service in-process: CPU time per request of each benchmark operation.

No server and no network: the Flask application runs in this process (Flask's test
client) over a fresh seeded SQLite store, so that the figures are CPU time
(``time.process_time``), little disturbed by other work on the machine. This is the
tool to measure an optimisation before and after; ``--cprofile`` shows where the time
goes. Run from the repository root::

    .venv/bin/python bench/scim_profile.py                      # every operation
    .venv/bin/python bench/scim_profile.py --op "get user by id" --cprofile 30
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scimbench import floor, load, seed  # noqa: E402

DEFAULT_REQUESTS = {
    "get user by id": 1000,
    "filter userName eq": 1000,
    "filter emails.value co, page of 100": 20,
    "list page of 100 (startIndex)": 30,
    "list page of 100 (cursor)": 30,
    "PATCH replace (2 attributes)": 300,
    "PATCH group add 100 members": 40,
    "create user": 300,
    "Bulk of 100 creates": 4,
}


COMPONENTS = [
    ("scim2-server", ("scim2_server",)),
    ("scim2-models", ("scim2_models",)),
    ("pydantic", ("pydantic", "email_validator", "idna")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("Flask/Werkzeug", ("flask", "werkzeug")),
    ("seller-connector", ("/connector/", "/scim/")),
]


def breakdown(stats: pstats.Stats) -> dict[str, float]:
    """Own time by component: which package the time is spent in."""
    totals: dict[str, float] = {}
    for (filename, _, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        own = entry[2]
        label = "other (stdlib, json, copy...)"
        if filename == "~":
            label = "SQLite (C)" if "sqlite3" in name else label
        else:
            for component, markers in COMPONENTS:
                if any(marker in filename for marker in markers):
                    label = component
                    break
        totals[label] = totals.get(label, 0.0) + own
    whole = sum(totals.values()) or 1.0
    return {k: round(v / whole, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="Users of the seller (10,000).")
    parser.add_argument("--groups", type=int, default=500, help="Groups of the seller (500).")
    parser.add_argument("--op", action="append", help="Only this operation (repeatable).")
    parser.add_argument(
        "--requests", type=int, help="Requests per operation (per-operation default)."
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="Rounds per operation; the median is kept (3)."
    )
    parser.add_argument("--cprofile", type=int, metavar="N", help="Print the top N functions.")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key (cumulative).")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="Share of the time spent in each component (under cProfile, which inflates "
        "Python-heavy parts).",
    )
    parser.add_argument(
        "--statements",
        type=int,
        metavar="N",
        help="Print the N SQL statements taking the most time, per request.",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="Also measure the libraries' floor: the CPU that scim2-server and scim2-models "
        "take alone for each request (bench/scimbench/floor.py).",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="COMPARE_JSON",
        help="With --floor: set each floor against what the aims of this compare run leave "
        "above its bare ceiling.",
    )
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="scim-profile-"))
    try:
        return profile(args, parser, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def statement_times() -> Iterator[dict[str, list[float]]]:
    """Time every SQL statement run inside the block, by statement text."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    times: dict[str, list[float]] = collections.defaultdict(list)

    def before(conn: Any, _cursor: Any, _sql: str, _params: Any, _ctx: Any, _many: bool) -> None:
        conn.info["bench.started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, sql: str, _params: Any, _ctx: Any, _many: bool) -> None:
        times[" ".join(sql.split())].append(time.perf_counter() - conn.info["bench.started"])

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield times
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)


def print_statements(times: dict[str, list[float]], requests: int, top: int) -> None:
    """The statements taking the most time: runs and milliseconds per request."""
    total = sum(sum(t) for t in times.values())
    runs = sum(len(t) for t in times.values())
    print(
        f"    SQL: {runs / requests:.1f} statements, {total / requests * 1000:.2f} ms per request"
    )
    ranked = sorted(times.items(), key=lambda item: -sum(item[1]))[:top]
    for sql, spent in ranked:
        per_request = sum(spent) / requests * 1000
        print(f"    {per_request:7.3f} ms  x{len(spent) / requests:4.1f}  {sql[:150]}")


def profile(args: argparse.Namespace, parser: argparse.ArgumentParser, work: Path) -> int:
    """Seed a store in ``work``, then measure (and profile) each chosen operation."""
    tenant = seed.seed_store(work, 1, args.users, args.groups)[0]
    for name in [k for k in os.environ if k.startswith("SELLER_CONNECTOR_")]:
        del os.environ[name]  # only this run's settings
    os.environ["SELLER_CONNECTOR_HOME"] = str(work)
    os.environ["SELLER_CONNECTOR_SECRET_KEY"] = "profile-secret-key-not-for-production"
    # The profile's own creates stay pending: thousands, past the default cap.
    os.environ["SELLER_CONNECTOR_MAX_PENDING_INVITATIONS"] = "10000000"
    from connector.entrypoints.web import create_app

    app = create_app()
    logging.getLogger("seller_connector").setLevel(logging.WARNING)
    client = app.test_client()
    sent = load.headers(tenant.token)
    operations = [*load.operations()[:4], load.WORK_EMAIL, load.CURSOR, *load.operations()[4:]]
    chosen = [op for op in operations if not args.op or op.name in args.op]
    if not chosen:
        parser.error(f"no such operation; choose among {[op.name for op in operations]}")
    figures: dict[str, Any] = {}
    for number, op in enumerate(chosen):
        tag = f"{load.RUN}p{number}"
        state = load.Client(tenant, "/scim/v2", args.users, random.Random(number), tag)

        def run(count: int, op: load.Operation = op, state: load.Client = state) -> None:
            for _ in range(count):
                request = op.build(state)
                response = client.open(
                    request.path, method=request.method, data=request.body, headers=sent
                )
                if not request.ok(response.status_code, response.data):
                    raise SystemExit(f"{op.name}: {response.status_code} {response.data[:300]!r}")

        count = args.requests or DEFAULT_REQUESTS.get(op.name, 100)
        run(max(2, count // 10))  # warm up
        rounds = []
        for _ in range(args.repeat):
            cpu, wall = time.process_time(), time.perf_counter()
            run(count)
            rounds.append((time.process_time() - cpu, time.perf_counter() - wall))
        # The median round: other work on the machine only ever adds time, but the best
        # round would hide costs that come now and then (garbage collection...).
        cpu, wall = sorted(rounds)[len(rounds) // 2]
        figures[op.name] = {
            "requests": count,
            "rounds": args.repeat,
            "cpu_ms": round(cpu / count * 1000, 3),
            "wall_ms": round(wall / count * 1000, 3),
        }
        print(
            f"{op.name:<38} {figures[op.name]['cpu_ms']:>9.2f} ms CPU "
            f"{figures[op.name]['wall_ms']:>9.2f} ms wall per request (median of {args.repeat} x {count})",
            flush=True,
        )
        if args.floor and floor.steps(op.name) is not None:
            spent = measure_floor(app, client, sent, op, state, count, args.repeat)
            figures[op.name]["floor_cpu_ms"] = round(spent * 1000, 3)
            share = spent / (cpu / count)
            print(f"    libraries' floor {spent * 1000:.3f} ms CPU ({share:.0%} of the request)")
        if args.statements:
            with statement_times() as times:
                run(count)
            print_statements(times, count, args.statements)
        if args.cprofile or args.breakdown:
            profile = cProfile.Profile()
            profile.enable()
            run(count)
            profile.disable()
            stats = pstats.Stats(profile, stream=io.StringIO())
            if args.breakdown:
                shares = breakdown(stats)
                figures[op.name]["breakdown"] = shares
                print("    " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
            if args.cprofile:
                out = io.StringIO()
                stats.stream = out  # type: ignore[attr-defined]
                stats.sort_stats(args.sort).print_stats(args.cprofile)
                print(out.getvalue())
    if args.floor and args.against:
        print_budgets(json.loads(args.against.read_text()), figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def measure_floor(
    app: Any, client: Any, sent: dict[str, str], op: Any, state: Any, count: int, repeat: int
) -> float:
    """CPU seconds per request of the library steps alone (median of ``repeat`` rounds)."""
    from scim.app import SellerScimService
    from scim.schemas import build_models

    connector = app.extensions["seller_connector"]
    models = build_models(connector.catalogue)
    service = SellerScimService(models.provider, secret=connector.settings.secret_key)
    base_url = f"{connector.settings.public_url}{floor.PREFIX}"
    prepared = []
    for _ in range(count):
        request = op.build(state)
        document = None
        if request.method in ("PUT", "PATCH"):
            # What our handler validates back into a model: the stored user, as rendered.
            document = client.get(request.path.split("?")[0], headers=sent).get_json()
        prepared.append(
            (floor.scim_request(request.method, request.path, request.body, base_url), document)
        )
    run = floor.steps(op.name)
    assert run is not None
    for scim_request, document in prepared[: max(2, count // 10)]:
        run(service, scim_request, document)  # warm up
    rounds = []
    for _ in range(repeat):
        started = time.process_time()
        for scim_request, document in prepared:
            run(service, scim_request, document)
        rounds.append((time.process_time() - started) / count)
    return sorted(rounds)[len(rounds) // 2]


def print_budgets(compare: dict[str, Any], figures: dict[str, Any]) -> None:
    """Each measured floor against what the compare run's aims leave above its ceiling."""
    print(
        f"\nAgainst the compare run of {compare.get('started', '?')} "
        f"(commit {compare.get('machine', {}).get('commit', '?')}): what each aim leaves "
        "above the bare ceiling, per request, and the libraries' floor"
    )
    print(
        f"{'operation':<30} {'c':>2} {'aim/s':>7} {'bare/s':>7} {'left':>8} {'floor':>8}  verdict"
    )
    for budget in floor.budgets(compare):
        measured = figures.get(budget.operation, {})
        if "floor_cpu_ms" not in measured:
            continue
        spent, request = measured["floor_cpu_ms"], measured["cpu_ms"]
        if spent > budget.ms:
            verdict = "out of reach: the libraries alone exceed what the aim leaves"
        else:
            verdict = (
                f"{budget.ms - spent:.2f} ms left for the rest ({budget.basis}); "
                f"ours spends {request - spent:.2f} ms on it in process"
            )
        print(
            f"{budget.operation[:30]:<30} {budget.concurrency:>2} {budget.aim_rps:>7.0f} "
            f"{budget.bare_rps:>7.0f} {budget.ms:>6.3f}ms {spent:>6.3f}ms  {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
