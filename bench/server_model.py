"""Which gunicorn server model serves SCIM fastest here: worker class, workers, threads.

``seller-connector serve``'s defaults come from this measurement (issue 16). One store is
seeded (USERS users in one seller) and every model is started on it at once; the same
cells (a read by id, a ``userName eq`` look-up, a list of 100, a PATCH and a create, at
concurrency 1 and 8) then run against the models interleaved, cell by cell, in ROUNDS
rounds with the models' order rotated each round, and each model's figure is the median
of its rounds. Interleaving matters on a shared machine: run one model after the other
and the machine's drift (other work, the host) shows as differences between models.
Run from the repository root::

    .venv/bin/python bench/server_model.py              # about 8 minutes
    .venv/bin/python bench/server_model.py --quick      # about 2 minutes

The load generator runs on the same machine and takes CPU from the server: on 2 cores,
a model with fewer busy processes leaves more to the clients, which the figures include.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scim_bench import RESULTS, loadavg, machine, table, workspace  # noqa: E402
from scimbench import load, seed, servers  # noqa: E402

MODELS: list[tuple[str, int, int]] = [
    ("sync", 2, 1),
    ("gthread", 2, 1),
    ("gthread", 2, 4),
    ("gthread", 3, 4),
    ("gthread", 4, 4),
    ("gthread", 2, 8),
]
"""(worker class, workers, threads): around the machine's 2 cores, and the current default.
(``sync 4x1`` came last in every earlier run: left out.)"""

OPERATIONS = [
    "get user by id",
    "filter userName eq",
    "list page of 100 (startIndex)",
    "PATCH replace (2 attributes)",
    "create user",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="Users of the seller (10,000).")
    parser.add_argument("--duration", type=float, help="Seconds measured per cell (2; quick 1).")
    parser.add_argument(
        "--concurrency", default="1,8", help="Concurrency levels, comma-separated (1,8)."
    )
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per cell (3; quick 1).")
    parser.add_argument("--quick", action="store_true", help="Shorter cells, 2,000 users.")
    parser.add_argument("--output", type=Path, help="JSON file (bench/results/server_model.json).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    users = 2000 if args.quick and args.users == 10_000 else args.users
    duration = args.duration or (1.0 if args.quick else 2.0)
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_mib']:,} MiB, "
        f"load average {loadavg():.2f}"
    )
    chosen = [op for op in load.operations() if op.name in OPERATIONS]
    rounds = 1 if args.quick and args.rounds == 3 else args.rounds
    names = [f"{k} {w}x{t}" for k, w, t in MODELS]
    rows: list[dict[str, Any]] = []
    with workspace(False) as work:
        home = work / "model"
        home.mkdir()
        tenant = seed.seed_store(home, 1, users, max(5, users // 20))[0]
        started = []
        try:
            for worker_class, workers, threads in MODELS:
                started.append(
                    servers.start_ours(home, workers, threads, worker_class=worker_class)
                )
            for round_number in range(rounds):
                turn = round_number % len(MODELS)
                order = list(range(len(MODELS)))[turn:] + list(range(len(MODELS)))[:turn]
                for op in chosen:
                    for c in concurrency:
                        for number in order:
                            server = started[number]
                            result = load.run_cell(
                                server.port,
                                server.prefix,
                                tenant,
                                users,
                                op,
                                c,
                                duration,
                                0.5,
                                seed=(round_number * 10 + number) * 100 + c,
                            )
                            figures = result.summary()
                            row = {
                                "model": names[number],
                                "round": round_number + 1,
                                "operation": op.name,
                                "concurrency": c,
                                **figures,
                                "loadavg": loadavg(),
                            }
                            rows.append(row)
                            print(
                                f"round {round_number + 1} {row['model']:<14} {op.name:<32} "
                                f"c={c} {figures['rps']:>8.1f}/s p50 {figures['p50_ms']:>6.1f} "
                                f"p99 {figures['p99_ms']:>6.1f}"
                                + (f" errors {figures['errors']}" if figures["errors"] else ""),
                                flush=True,
                            )
        finally:
            for server in started:
                server.stop()
    models = [f"{k} {w}x{t}" for k, w, t in MODELS]
    body = []
    for op in chosen:
        for c in concurrency:
            by_model: dict[str, list[float]] = {}
            for r in rows:
                if r["operation"] == op.name and r["concurrency"] == c:
                    by_model.setdefault(r["model"], []).append(r["rps"])
            body.append(
                [
                    op.name,
                    c,
                    *(
                        f"{statistics.median(by_model[m]):,.1f}" if m in by_model else "-"
                        for m in models
                    ),
                ]
            )
    print(
        f"\nrequests per second, median of {rounds} round(s)\n"
        + table(["operation", "c", *models], body)
    )
    output = args.output or RESULTS / "server_model.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print(f"results in {output}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
