"""Benchmark the directory sync against a real, throwaway slapd on 127.0.0.1.

Seeds USERS people in GROUPS groups (ldapadd, so the memberof overlay sees them),
then measures, for each target (``--target``: the in-memory one, the real store, i.e.
``StoreDirectoryTarget`` on a fresh SQLite file through the use cases, or both in
lockstep on the same directory):

* a read-only streamed scan (how fast the reader pages through the directory),
* the first full sync (read + plan + apply: all creates; users/s),
* a steady full sync (read + plan, nothing to change),
* a delta of CHANGES changes (emails, group moves, disables, new people): the group
  moves touch every permission set, so every member of them is read again (the
  worst case: who left a group shows only by re-reading the set's holders),
* a delta of attribute-only changes (no group changed: only the changed entries),
* peak Python memory (tracemalloc) of a scan and of a full sync (plan; for the
  store also a 100-change delta with its writes), the process's peak RSS, and
  slapd's RSS.

Prints a table and writes JSON to bench/results/. Run:
``.venv/bin/python bench/ldap_sync.py [--users 10000 --groups 200 --changes 100]
[--target memory|store|both] [--batch-size 500]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import resource
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
from connector.services.directory.sync import DirectoryTarget, SyncResult, run_sync  # noqa: E402
from connector.settings import Settings  # noqa: E402
from tests.support.slapd import GROUPS, PEOPLE, Slapd  # noqa: E402
from tests.unit.directory.memory_target import MemoryTarget  # noqa: E402

SETS = 10  # permission sets; each group maps to one of them


def user_dn(i: int) -> str:
    return f"uid=user{i:05d},ou=staff,{PEOPLE}"


def group_dn(g: int) -> str:
    return f"cn=group{g:03d},{GROUPS}"


def seed_ldif(users: int, groups: int) -> tuple[str, str]:
    """People first (one LDIF), then groups (each person in one group, round robin)."""
    people = []
    for i in range(users):
        people.append(
            f"dn: {user_dn(i)}\nobjectClass: inetOrgPerson\nuid: user{i:05d}\n"
            f"cn: User {i}\nsn: Number{i}\ngivenName: User\nmail: user{i:05d}@example.com\n"
        )
    members: list[list[str]] = [[] for _ in range(groups)]
    for i in range(users):
        members[i % groups].append(user_dn(i))
    group_entries = []
    for g in range(groups):
        lines = [f"dn: {group_dn(g)}", "objectClass: groupOfNames", f"cn: group{g:03d}"]
        lines += [f"member: {m}" for m in members[g]] or [f"member: {group_dn(g)}"]
        group_entries.append("\n".join(lines) + "\n")
    return "\n".join(people), "\n".join(group_entries)


def changes_ldif(users: int, groups: int, count: int) -> str:
    """``count`` changes: 40% email changes, 30% group moves, 20% disables, 10% new people."""
    emails, moves, disables = int(count * 0.4), int(count * 0.3), int(count * 0.2)
    new = count - emails - moves - disables
    out = []
    step = max(1, users // count)
    picks = iter(range(0, users, step))
    for _ in range(emails):
        i = next(picks)
        out.append(
            f"dn: {user_dn(i)}\nchangetype: modify\nreplace: mail\nmail: renamed{i:05d}@example.com\n"
        )
    for _ in range(moves):
        i = next(picks)
        old, new_group = i % groups, (i + 1) % groups
        out.append(
            f"dn: {group_dn(old)}\nchangetype: modify\ndelete: member\nmember: {user_dn(i)}\n"
        )
        out.append(
            f"dn: {group_dn(new_group)}\nchangetype: modify\nadd: member\nmember: {user_dn(i)}\n"
        )
    for _ in range(disables):
        i = next(picks)
        out.append(
            f"dn: {user_dn(i)}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n"
        )
    for n in range(new):
        i = users + n
        out.append(
            f"dn: {user_dn(i)}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: user{i:05d}\n"
            f"cn: User {i}\nsn: Number{i}\ngivenName: User\nmail: user{i:05d}@example.com\n"
        )
        out.append(
            f"dn: {group_dn(n % groups)}\nchangetype: modify\nadd: member\nmember: {user_dn(i)}\n"
        )
    return "\n".join(out)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def traced(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak Python allocation (bytes) while ``fn`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        value = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, value


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--target", choices=["memory", "store", "both"], default="both")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="store: changes per transaction"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    kinds = ["memory", "store"] if args.target == "both" else [args.target]

    figures: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="ldap-bench-"))
    with Slapd() as server:
        server.seed_base()
        people, group_entries = seed_ldif(args.users, args.groups)
        figures["seed_s"], _ = timed(lambda: (server.add(people), server.add(group_entries)))

        def config_for(seller_id: str) -> DirectoryConfig:
            return DirectoryConfig.model_validate(
                {
                    "id": "bench",
                    "preset": "openldap",
                    "url": server.url,
                    "bind_dn": server.sync_dn,
                    "bind_password_env": "UNUSED_PASSWORD_IS_PASSED_DIRECTLY",
                    "base_dn": PEOPLE,
                    "attributes": {
                        "disabled": {"attribute": "employeeType", "values": ["disabled"]}
                    },
                    "groups": {
                        "base_dn": GROUPS,
                        "map": {group_dn(g): f"Set {g % SETS}" for g in range(args.groups)},
                    },
                    "seller": {"id": seller_id},
                    "page_size": args.page_size,
                    "deactivation_threshold": 0.10,
                }
            )

        targets: dict[str, tuple[DirectoryConfig, DirectoryTarget]] = {}
        if "memory" in kinds:
            targets["memory"] = (
                config_for("seller-1"),
                MemoryTarget(permission_sets={f"Set {s}" for s in range(SETS)}),
            )
        if "store" in kinds:
            connector, seller_id = make_store(workdir)
            config = config_for(seller_id)
            targets["store"] = (config, connector.directory_target(config))

        def sync(kind: str, **kwargs: Any) -> SyncResult:
            config, target = targets[kind]
            with DirectoryReader(config, password=server.sync_password) as reader:
                return run_sync(
                    config, reader, target, describe=False, batch_size=args.batch_size, **kwargs
                )

        def scan_only() -> int:
            config = next(iter(targets.values()))[0]
            with DirectoryReader(config, password=server.sync_password) as reader:
                return sum(1 for _ in reader.read_all().users)

        figures["scan_s"], scanned = timed(scan_only)
        figures["scanned_users"] = scanned
        for kind in kinds:
            f = figures.setdefault(kind, {})
            f["first_full_s"], first = timed(lambda kind=kind: sync(kind, full=True))
            assert first.ok and len(first.plan.creates) == args.users, first.plan.summary()
            f["first_full_creates"] = len(first.plan.creates)
            f["first_full_users_per_s"] = args.users / f["first_full_s"]
            f["steady_full_s"], steady = timed(
                lambda kind=kind: sync(kind, full=True, dry_run=True)
            )
            assert steady.plan.is_empty, steady.plan.summary()
            f["rss_after_first_full_mib"] = (
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )

        figures["changes_applied_s"], _ = timed(
            lambda: server.modify(changes_ldif(args.users, args.groups, args.changes))
        )
        for kind in kinds:
            f = figures[kind]
            # A delta right after a full run: full_reconcile_every (runs=24) is not due.
            f["delta_s"], delta = timed(lambda kind=kind: sync(kind))
            assert not delta.full and delta.ok, delta.plan.summary()
            plan = delta.plan
            f["delta"] = {
                "directory_users_read": plan.directory_users,
                "updates": len(plan.updates),
                "permission_changes": len(plan.permission_changes),
                "deactivations": len(plan.deactivations),
                "creates": len(plan.creates),
                "applied": len(delta.applied),
            }
            f["delta_after_s"], after = timed(lambda kind=kind: sync(kind))
            assert after.plan.is_empty, after.plan.summary()

        # The common case: people's attributes change, no group does.
        attribute_changes = "\n".join(
            f"dn: {user_dn(i)}\nchangetype: modify\nreplace: sn\nsn: Changed{i}\n"
            for i in range(1, args.users, max(1, args.users // args.changes))
        )
        server.modify(attribute_changes)
        for kind in kinds:
            f = figures[kind]
            f["delta_attributes_s"], attrs_delta = timed(lambda kind=kind: sync(kind))
            assert not attrs_delta.full and attrs_delta.ok
            f["delta_attributes"] = {
                "directory_users_read": attrs_delta.plan.directory_users,
                "updates": len(attrs_delta.plan.updates),
            }

        figures["scan_peak_python_mib"] = traced(scan_only)[0] / 2**20
        for kind in kinds:
            figures[kind]["full_sync_peak_python_mib"] = (
                traced(lambda kind=kind: sync(kind, full=True, dry_run=True))[0] / 2**20
            )
        if "store" in kinds:
            # A delta that writes: 100 name changes through the use cases, traced.
            server.modify(
                "\n".join(
                    f"dn: {user_dn(i)}\nchangetype: modify\nreplace: sn\nsn: Traced{i}\n"
                    for i in range(2, args.users, max(1, args.users // args.changes))
                )
            )
            peak, traced_delta = traced(lambda: sync("store"))
            assert traced_delta.ok and traced_delta.plan.updates
            figures["store"]["delta_write_peak_python_mib"] = peak / 2**20
        figures["process_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert server.process is not None
        slapd_rss = rss_kib(server.process.pid)
        figures["slapd_rss_mib"] = slapd_rss / 1024 if slapd_rss else None

    slapd_version = subprocess.run(
        ["slapd", "-VV"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    figures["environment"] = {
        "users": args.users,
        "groups": args.groups,
        "changes": args.changes,
        "page_size": args.page_size,
        "batch_size": args.batch_size,
        "targets": kinds,
        "store": "SQLite (WAL) through StoreDirectoryTarget" if "store" in kinds else None,
        "python": platform.python_version(),
        "slapd": slapd_version[0].strip() if slapd_version else None,
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "load_average": __import__("os").getloadavg(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }

    rows = [
        ("seed (ldapadd users + groups)", f"{figures['seed_s']:.2f} s"),
        (f"streamed scan of {scanned} users", f"{figures['scan_s']:.2f} s"),
        ("peak Python memory, scan", f"{figures['scan_peak_python_mib']:.1f} MiB"),
    ]
    for kind in kinds:
        f = figures[kind]
        rows += [
            (
                f"[{kind}] first full sync ({f['first_full_creates']} creates)",
                f"{f['first_full_s']:.2f} s ({f['first_full_users_per_s']:.0f} users/s)",
            ),
            (f"[{kind}] steady full sync (read + plan, no change)", f"{f['steady_full_s']:.2f} s"),
            (
                f"[{kind}] delta after {args.changes} changes "
                f"({f['delta']['directory_users_read']} entries read, "
                f"{f['delta']['applied']} applied)",
                f"{f['delta_s']:.2f} s",
            ),
            (f"[{kind}] delta with nothing changed", f"{f['delta_after_s']:.2f} s"),
            (
                f"[{kind}] delta after {f['delta_attributes']['updates']} attribute-only changes",
                f"{f['delta_attributes_s']:.2f} s",
            ),
            (
                f"[{kind}] peak Python memory, full sync (plan)",
                f"{f['full_sync_peak_python_mib']:.1f} MiB",
            ),
        ]
        if "delta_write_peak_python_mib" in f:
            rows.append(
                (
                    f"[{kind}] peak Python memory, delta writing {args.changes} updates",
                    f"{f['delta_write_peak_python_mib']:.1f} MiB",
                )
            )
    rows += [
        ("process peak RSS", f"{figures['process_max_rss_mib']:.0f} MiB"),
        ("slapd RSS", f"{figures['slapd_rss_mib']:.0f} MiB" if figures["slapd_rss_mib"] else "?"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for kind in kinds:
        print(f"[{kind}] delta plan:", json.dumps(figures[kind]["delta"]))

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"ldap_sync-{stamp}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    __import__("shutil").rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
