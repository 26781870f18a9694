"""Benchmark the directory sync: a real, throwaway slapd on 127.0.0.1 into a SQLite store.

The directory: USERS people in ou=staff, in GROUPS groups (every person in one group,
round robin; the last tenth of the groups nested in the first ones), 1% of people
disabled (``employeeType: disabled``), every group mapped to one of 10 permission sets.
slapd runs syncprov with a session log, so deltas use the content synchronization (and
see deletions). The store is a fresh SQLite file through ``StoreDirectoryTarget``, with
no Keycloak: changes wait in the outbox.

Printed, from one run each:

* at ``--users`` (10,000 by default): the first full sync (every person created), a
  delta after ``--changes`` changes (emails, group moves, disables, new people, deletions
  and moves out of the base DN), and a delta with nothing to do;
* for each of ``--memory-sizes`` (1,000, 10,000, 100,000), in a fresh process: the peak
  Python memory (tracemalloc) of the first full sync and of a delta after
  ``--changes`` changes, and the process's peak RSS.

``--profile`` then runs the first full sync and the delta once more, on a fresh
directory and store, under cProfile, and prints where the time goes (cumulative). Figures go to stdout and as JSON to bench/results/.

``.venv/bin/python bench/ldap_sync.py [--users 10000] [--changes 100] [--profile]
[--memory-sizes 1000,10000,100000]``
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.adapters.ldap.config import DirectoryConfig  # noqa: E402
from connector.adapters.ldap.reader import DirectoryReader  # noqa: E402
from connector.bootstrap import Connector, bootstrap  # noqa: E402
from connector.domain.drafts import Actor, PermissionSetDraft  # noqa: E402
from connector.domain.model import Plan  # noqa: E402
from connector.services import permission_sets as set_cases  # noqa: E402
from connector.services import sellers as seller_cases  # noqa: E402
from connector.services.directory.sync import SyncResult, run_sync  # noqa: E402
from connector.settings import Settings  # noqa: E402
from tests.support.slapd import GROUPS, PEOPLE, Slapd  # noqa: E402

SETS = 10  # permission sets; each group maps to one of them
FORMER = "ou=former,dc=example,dc=com"  # outside the base DN


def user_dn(i: int) -> str:
    return f"uid=user{i:06d},ou=staff,{PEOPLE}"


def group_dn(g: int) -> str:
    return f"cn=group{g:03d},{GROUPS}"


def person(i: int, *, changetype: bool = False) -> str:
    disabled = "employeeType: disabled\n" if i % 100 == 99 else ""
    return (
        f"dn: {user_dn(i)}\n"
        + ("changetype: add\n" if changetype else "")
        + f"objectClass: inetOrgPerson\nuid: user{i:06d}\ncn: User {i}\nsn: Number{i}\n"
        f"givenName: User\nmail: user{i:06d}@example.com\n{disabled}"
    )


def seed_ldif(users: int, groups: int, members_of: int | None = None) -> tuple[str, str]:
    """People first, then groups: each person in one group (round robin); the last
    tenth of the groups are nested, each in one of the first ones. ``members_of``: the
    number of people the groups hold (``users`` by default)."""
    people = "\n".join(person(i) for i in range(users))
    members: list[list[str]] = [[] for _ in range(groups)]
    for i in range(users if members_of is None else members_of):
        members[i % groups].append(user_dn(i))
    nested = max(1, groups // 10)
    for n, g in enumerate(range(groups - nested, groups)):
        members[n].append(group_dn(g))
    entries = []
    for g in range(groups):
        lines = [f"dn: {group_dn(g)}", "objectClass: groupOfNames", f"cn: group{g:03d}"]
        lines += [f"member: {m}" for m in members[g]] or [f"member: {group_dn(g)}"]
        entries.append("\n".join(lines) + "\n")
    return people, "\n".join(entries)


def changes_ldif(users: int, groups: int, count: int) -> str:
    """``count`` changes: 35% emails, 25% group moves, 15% disables, 10% new people,
    10% deletions, 5% moves out of the base DN (nobody touched twice)."""
    shares = {"email": 35, "move": 25, "disable": 15, "new": 10, "delete": 10, "out": 5}
    counts = {k: count * v // 100 for k, v in shares.items()}
    counts["email"] += count - sum(counts.values())
    picks = iter(range(1, users, max(1, users // count)))
    out = []
    for _ in range(counts["email"]):
        i = next(picks)
        out.append(f"dn: {user_dn(i)}\nchangetype: modify\nreplace: mail\nmail: r{i}@example.com\n")
    for _ in range(counts["move"]):
        i = next(picks)
        old, new = i % groups, (i + 1) % groups
        out.append(
            f"dn: {group_dn(old)}\nchangetype: modify\ndelete: member\nmember: {user_dn(i)}\n"
        )
        out.append(f"dn: {group_dn(new)}\nchangetype: modify\nadd: member\nmember: {user_dn(i)}\n")
    for _ in range(counts["disable"]):
        i = next(picks)
        out.append(
            f"dn: {user_dn(i)}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n"
        )
    for n in range(counts["new"]):
        i = users + n
        out.append(person(i, changetype=True))
        out.append(
            f"dn: {group_dn(n % groups)}\nchangetype: modify\nadd: member\nmember: {user_dn(i)}\n"
        )
    for _ in range(counts["delete"]):
        out.append(f"dn: {user_dn(next(picks))}\nchangetype: delete\n")
    for _ in range(counts["out"]):
        i = next(picks)
        out.append(
            f"dn: {user_dn(i)}\nchangetype: modrdn\nnewrdn: uid=user{i:06d}\ndeleteoldrdn: 1\n"
            f"newsuperior: {FORMER}\n"
        )
    return "\n".join(out)


def make_store(folder: Path) -> tuple[Connector, str]:
    """A fresh, migrated SQLite store with one professional seller and its SETS sets."""
    connector = bootstrap(
        Settings(
            database_url=f"sqlite:///{folder / 'bench.sqlite3'}", home=folder, secret_key="bench"
        )
    )
    with connector.uow() as uow:
        seller, _ = seller_cases.create_seller(
            uow,
            connector.catalogue,
            "Bench Seller",
            Plan.professional,
            "owner@bench-seller.example.org",
            "Bench Owner",
            Actor("bench"),
        )
        for s in range(SETS):
            set_cases.create_permission_set(
                uow, connector.catalogue, seller, PermissionSetDraft(f"Set {s}"), Actor("bench")
            )
        uow.commit()
    return connector, seller.id


class Bench:
    """One slapd seeded with ``users`` people, one store, and the sync between them."""

    def __init__(self, users: int, groups: int, workdir: Path) -> None:
        self.users, self.groups = users, groups
        self.server = Slapd(sessionlog=10_000)
        self.server.start()
        self.server.seed_base()
        self.server.add(f"dn: {FORMER}\nobjectClass: organizationalUnit\nou: former\n")
        started = time.perf_counter()
        for start in range(0, users, 10_000):  # in slices: the LDIF is not held whole
            self.server.add("\n".join(person(i) for i in range(start, min(users, start + 10_000))))
        self.server.add(seed_ldif(0, groups, users)[1])
        self.seed_s = time.perf_counter() - started
        self.connector, seller_id = make_store(workdir)
        self.config = DirectoryConfig.model_validate(
            {
                "id": "bench",
                "preset": "openldap",
                "url": self.server.url,
                "bind_dn": self.server.sync_dn,
                "bind_password_env": "UNUSED_THE_PASSWORD_IS_PASSED_DIRECTLY",
                "base_dn": PEOPLE,
                "attributes": {"disabled": {"attribute": "employeeType", "values": ["disabled"]}},
                "groups": {
                    "base_dn": GROUPS,
                    "map": {group_dn(g): f"Set {g % SETS}" for g in range(groups)},
                },
                "seller": {"id": seller_id},
                "page_size": 500,
                "deactivation_threshold": 0.10,
            }
        )
        self.target = self.connector.directory_target(self.config)

    def sync(self, **kwargs: Any) -> SyncResult:
        with DirectoryReader(self.config, password=self.server.sync_password) as reader:
            return run_sync(
                self.config, reader, self.target, describe=False, progress_every=0, **kwargs
            )

    def change(self, count: int) -> None:
        self.server.modify(changes_ldif(self.users, self.groups, count))

    def close(self) -> None:
        self.server.stop()
        self.connector.engine.dispose()


def measured(fn: Callable[[], SyncResult], profile: bool) -> tuple[float, SyncResult, str]:
    """(seconds, result, the profile's top lines when asked)."""
    gc.collect()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = fn()
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    text = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        text = out.getvalue()
    return seconds, result, text


def traced(fn: Callable[[], SyncResult]) -> tuple[float, SyncResult]:
    """(peak Python memory in MiB while ``fn`` runs, its result)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, result


def counts(result: SyncResult) -> dict[str, int]:
    plan = result.plan
    return {
        "read": plan.directory_users,
        "creates": len(plan.creates),
        "updates": len(plan.updates),
        "permission_changes": len(plan.permission_changes),
        "deactivations": len(plan.deactivations),
        "reactivations": len(plan.reactivations),
        "applied": len(result.applied),
        "refused": len(result.failures),
    }


def timings(users: int, groups: int, changes: int) -> dict[str, Any]:
    """One run each, timed (no profiler, no tracemalloc)."""
    workdir = Path(tempfile.mkdtemp(prefix="ldap-bench-"))
    bench = Bench(users, groups, workdir)
    figures: dict[str, Any] = {"users": users, "seed_s": bench.seed_s}
    try:
        seconds, first, _ = measured(lambda: bench.sync(), False)
        assert first.full and first.ok, first.plan.summary()
        figures["first_full"] = {"s": seconds, **counts(first)}
        bench.change(changes)
        seconds, delta, _ = measured(lambda: bench.sync(), False)
        assert not delta.full and delta.ok, delta.plan.summary()
        figures["delta"] = {"s": seconds, "changes": changes, **counts(delta)}
        seconds, empty, _ = measured(lambda: bench.sync(), False)
        assert not empty.full and empty.plan.is_empty, empty.plan.summary()
        figures["empty_delta"] = {"s": seconds, **counts(empty)}
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def profiles(users: int, groups: int, changes: int) -> dict[str, str]:
    """The same runs again on a fresh directory and store, under cProfile (slower: the
    profiler's overhead; the timings above are the unprofiled ones)."""
    workdir = Path(tempfile.mkdtemp(prefix="ldap-bench-"))
    bench = Bench(users, groups, workdir)
    found: dict[str, str] = {}
    try:
        seconds, _, found["first full sync"] = measured(lambda: bench.sync(), True)
        found["first full sync"] = f"{seconds:.2f} s under cProfile\n" + found["first full sync"]
        bench.change(changes)
        seconds, _, text = measured(lambda: bench.sync(), True)
        found[f"delta after {changes} changes"] = f"{seconds:.2f} s under cProfile\n{text}"
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return found


def memory(users: int, groups: int, changes: int) -> dict[str, Any]:
    """Run in its own process: peak memory of a first full sync and of a delta."""
    workdir = Path(tempfile.mkdtemp(prefix="ldap-bench-"))
    bench = Bench(users, groups, workdir)
    try:
        started = time.perf_counter()
        full_mib, first = traced(lambda: bench.sync())
        full_s = time.perf_counter() - started
        assert first.full and first.ok, first.plan.summary()
        bench.change(changes)
        delta_mib, delta = traced(lambda: bench.sync())
        assert not delta.full and delta.ok, delta.plan.summary()
        assert bench.server.process is not None
        slapd = _rss_mib(bench.server.process.pid)
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "users": users,
        "first_full_peak_python_mib": full_mib,
        "first_full_traced_s": full_s,
        "delta_peak_python_mib": delta_mib,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "slapd_rss_mib": slapd,
    }


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--memory-sizes", default="1000,10000,100000")
    parser.add_argument("--profile", action="store_true", help="then profile the runs")
    parser.add_argument("--memory-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--target",
        choices=["memory", "store", "both"],
        help="ignored, for older command lines: the store is what is measured",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    if args.memory_only:  # a child process of the memory series
        print(json.dumps(memory(args.memory_only, args.groups, args.changes)))
        return 0

    load_before = os.getloadavg()
    figures: dict[str, Any] = {"timed": timings(args.users, args.groups, args.changes)}
    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    series = []
    for size in sizes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-only",
                str(size),
                "--groups",
                str(args.groups),
                "--changes",
                str(args.changes),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        series.append(json.loads(done.stdout.strip().splitlines()[-1]))
    figures["memory"] = series
    if args.profile:
        figures["profiles"] = profiles(args.users, args.groups, args.changes)
    slapd = subprocess.run(["slapd", "-VV"], capture_output=True, text=True, check=False)
    figures["environment"] = {
        "python": platform.python_version(),
        "slapd": (slapd.stderr.splitlines() or [""])[0].strip(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }

    timed = figures["timed"]
    n = timed["users"]
    print(f"directory sync, real slapd ({n:,} people, {args.groups} groups) -> SQLite, no Keycloak")
    print(
        f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
        f"({figures['environment']['cpus']} cores)"
    )
    print(f"  seed (ldapadd)                         {timed['seed_s']:6.2f} s")
    for key, label, aim in (
        ("first_full", "first full sync", 5.0),
        ("delta", f"delta after {args.changes} changes", 1.0),
        ("empty_delta", "delta with nothing to do", 0.5),
    ):
        row = timed[key]
        verdict = "met" if row["s"] <= aim else "MISSED"
        detail = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("s", "changes") and v)
        print(f"  {label:<38} {row['s']:6.2f} s  (aim {aim} s: {verdict}; {detail})")
    print("peak memory (a fresh process per size; Python = tracemalloc peak during the sync)")
    print(
        f"  {'people':>8}  {'first full, Python':>18}  {'delta, Python':>13}  "
        f"{'process peak RSS':>16}  {'slapd RSS':>9}"
    )
    for row in series:
        print(
            f"  {row['users']:>8,}  {row['first_full_peak_python_mib']:>14.1f} MiB  "
            f"{row['delta_peak_python_mib']:>9.1f} MiB  {row['process_peak_rss_mib']:>12.0f} MiB  "
            f"{(row['slapd_rss_mib'] or 0):>5.0f} MiB"
        )
    for key, text in figures.get("profiles", {}).items():
        print(f"\n--- cProfile, {key} (cumulative) ---\n{text}")

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"ldap_sync-{stamp}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
