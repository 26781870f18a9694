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

``--keycloak`` then measures the directory -> Keycloak path end to end, on a fresh slapd
and store with the same ``--users`` people: a real Keycloak (26.7.3, dev-mem, with the
project's plugin and the ``sellers`` realm, started through tests/support/keycloak.py, or
the one named by SELLER_CONNECTOR_TEST_KEYCLOAK_URL), the store configured with it (the
least-privilege ``seller-connector`` client), the realm's mail and the connector's own
pointed at an SMTP sink (tests/support/smtp.py). Timed: (a) the first full sync into the
store, (b) draining the outbox into Keycloak with the connector's own outbox worker
(``OutboxWorker.drain``, what ``seller-connector worker`` runs each round, with the
``SELLER_CONNECTOR_OUTBOX_*`` policy; every user is synced and the active ones invited),
again after entries waiting for a retry are due, until nothing is pending; then (c) a
delta after ``--changes`` changes and its drain. What arrived is checked against the store
(the organization's members, the users tagged with the seller, the enabled ones, the
invitation emails). The seller's own setup (organization, groups, owner) and
``--keycloak-warmup`` users of another seller (to warm the JVM) are drained first, untimed.

``.venv/bin/python bench/ldap_sync.py [--users 10000] [--changes 100] [--profile]
[--memory-sizes 1000,10000,100000] [--keycloak [--keycloak-warmup 200]]``
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
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
import threading
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
from connector.domain.model import Plan, utcnow  # noqa: E402
from connector.services import permission_sets as set_cases  # noqa: E402
from connector.services import sellers as seller_cases  # noqa: E402
from connector.services.directory.sync import SyncResult, run_sync  # noqa: E402
from connector.services.outbox import OutboxWorker, RoundReport  # noqa: E402
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
        self.seller_id = seller_id
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


# -- Directory -> Keycloak, end to end (--keycloak) -------------------------------------------

DRAIN_TIMEOUT = 3600.0  # seconds a drain may take before the bench gives up on what is left


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def drain_until_empty(worker: OutboxWorker, connector: Connector, label: str) -> dict[str, Any]:
    """Drain the outbox into Keycloak as the worker does (``OutboxWorker.drain``), again
    whenever entries waiting for their retry are due, until nothing is pending (or
    DRAIN_TIMEOUT): (seconds, what the rounds did, what is left). A line to stderr every 15 s."""
    queue = connector.outbox_queue()
    total = RoundReport()
    poison_before = queue.backlog(utcnow()).poison
    started = time.perf_counter()
    finished = threading.Event()
    peak_load = [os.getloadavg()[0]]

    def watch() -> None:
        while not finished.wait(15.0):
            peak_load.append(os.getloadavg()[0])
            left = queue.backlog(utcnow())
            progress(
                f"  {label}: {time.perf_counter() - started:5.0f} s, {left.pending:,} pending "
                f"({left.waiting_for_retry:,} waiting for a retry), {left.in_progress:,} in "
                f"progress, {left.poison - poison_before:,} new poison; load "
                f"{peak_load[-1]:.1f}"
            )

    watcher = threading.Thread(target=watch, name="drain-progress", daemon=True)
    watcher.start()
    try:
        while True:
            total.add(worker.drain())
            left = queue.backlog(utcnow())
            if left.pending + left.in_progress == 0:
                break
            if time.perf_counter() - started > DRAIN_TIMEOUT:
                progress(f"  {label}: gave up after {DRAIN_TIMEOUT:.0f} s, {left.pending} pending")
                break
            time.sleep(0.2)  # what is left waits for its retry time
    finally:
        seconds = time.perf_counter() - started
        finished.set()
        watcher.join()
    return {
        "s": seconds,
        **{k: v for k, v in total.as_dict().items() if k not in ("errors", "unavailable")},
        "provider_unavailable": total.unavailable,
        "left_pending": left.pending + left.in_progress,
        "new_poison": left.poison - poison_before,
        "errors": total.errors[:5],
        "error_count": len(total.errors),
        "peak_load_1min": max(peak_load),
    }


def arrived(server: Any, connector: Connector, seller_id: str, attribute: str) -> dict[str, Any]:
    """What Keycloak holds of the seller, beside what the store holds: organization members,
    users tagged with the seller (all, enabled) against the store's users (all, active)."""
    with connector.uow() as uow:
        people = uow.users.list(seller_id, include_deleted=True)
    org = server.admin_json("GET", "organizations", params={"q": f"seller_id:{seller_id}"})
    members = int(server.admin_json("GET", f"organizations/{org[0]['id']}/members/count"))
    query = {"q": f"{attribute}:{seller_id}"}
    tagged = int(server.admin_json("GET", "users/count", params=query))
    enabled = int(server.admin_json("GET", "users/count", params={**query, "enabled": "true"}))
    found = {
        "organization_members": members,
        "keycloak_users": tagged,
        "keycloak_enabled": enabled,
        "store_users": len(people),
        "store_active": sum(1 for u in people if u.active and not u.deleted),
        "store_without_keycloak_id": sum(1 for u in people if not u.idp_id),
    }
    found["ok"] = (
        tagged == found["store_users"]
        and enabled == found["store_active"]
        and found["store_without_keycloak_id"] == 0
    )
    return found


def complete(drained: dict[str, Any]) -> bool:
    """Whether a drain left nothing behind: nothing pending, nothing new in poison."""
    return drained["left_pending"] == 0 and drained["new_poison"] == 0


def end_to_end(users: int, groups: int, changes: int, warmup: int) -> dict[str, Any]:
    """Directory -> store -> outbox -> Keycloak for ``users`` people, and a delta (see the
    module's docstring)."""
    from bench.keycloak_push import connector_path
    from connector.adapters.keycloak import KeycloakIdentityProvider
    from tests.support.keycloak import KeycloakServer
    from tests.support.smtp import SmtpSink

    figures: dict[str, Any] = {"users": users, "groups": groups, "load_start": os.getloadavg()}
    server = KeycloakServer.from_env()
    started_here = server is None
    if server is None:
        progress("keycloak: starting a throwaway Keycloak (dev-mem, with the plugin)...")
        begin = time.perf_counter()
        server = KeycloakServer.start(db="dev-mem")
        figures["keycloak_start_s"] = time.perf_counter() - begin
        progress(f"keycloak: ready after {figures['keycloak_start_s']:.0f} s: {server.url}")
    figures["keycloak_started_here"] = started_here
    workdir = Path(tempfile.mkdtemp(prefix="ldap-keycloak-bench-"))
    sink = SmtpSink().start()
    bench: Bench | None = None
    try:
        figures["keycloak"] = server.admin_json("GET", "/admin/serverinfo")["systemInfo"]["version"]
        # Invitations are emails Keycloak sends: its realm's mail, and the connector's own
        # (notices), go to the sink.
        server.set_smtp(sink.host, sink.port)
        os.environ.setdefault("SELLER_CONNECTOR_SMTP_HOST", sink.host)
        os.environ.setdefault("SELLER_CONNECTOR_SMTP_PORT", str(sink.port))
        settings = server.connector_settings()
        idp = KeycloakIdentityProvider(settings)
        idp.ensure_catalogue()  # once, as `seller-connector keycloak setup` does
        if idp.bulk_endpoint() is None:
            raise SystemExit("this Keycloak has no seller-connector bulk endpoint: the plugin")
        if warmup:
            progress(f"keycloak: warming the JVM up with {warmup} users of another seller...")
            connector_path(idp, warmup, 500, "warmup")
        progress(f"keycloak: seeding slapd with {users:,} people...")
        bench = made = Bench(users, groups, workdir)
        figures["seed_s"] = made.seed_s
        seller_id = made.seller_id
        connector = dataclasses.replace(bench.connector, keycloak=settings)
        worker = connector.outbox_worker(console=False)
        figures["outbox_policy"] = dataclasses.asdict(worker.policy)
        attribute = idp.names.attributes["seller_id"]
        figures["setup_drain"] = drain_until_empty(worker, connector, "setup drain")
        sink.clear()

        progress(f"keycloak: (a) first full sync of {users:,} people into the store...")
        seconds, first, _ = measured(lambda: made.sync(), False)
        figures["first_full"] = {"s": seconds, "ok": first.full and first.ok, **counts(first)}
        progress(f"keycloak: (a) {seconds:.1f} s; (b) draining the outbox into Keycloak...")
        figures["first_drain"] = drain_until_empty(worker, connector, "drain")
        figures["first_drain"]["emails"] = len(sink.messages)
        figures["first_total_s"] = figures["first_full"]["s"] + figures["first_drain"]["s"]
        figures["users_per_s"] = users / figures["first_total_s"]
        progress(f"keycloak: (b) {figures['first_drain']['s']:.1f} s; checking what arrived...")
        figures["first_arrived"] = arrived(server, connector, seller_id, attribute)
        figures["first_arrived"]["ok"] &= complete(figures["first_drain"])
        sink.clear()

        progress(f"keycloak: (c) {changes} changes in slapd, delta sync, drain...")
        made.change(changes)
        seconds, delta, _ = measured(lambda: made.sync(), False)
        figures["delta"] = {
            "s": seconds,
            "changes": changes,
            "ok": (not delta.full) and delta.ok,
            **counts(delta),
        }
        figures["delta_drain"] = drain_until_empty(worker, connector, "delta drain")
        figures["delta_drain"]["emails"] = len(sink.messages)
        figures["delta_total_s"] = figures["delta"]["s"] + figures["delta_drain"]["s"]
        figures["delta_arrived"] = arrived(server, connector, seller_id, attribute)
        if changes:
            # The first change of changes_ldif is user 1's new address.
            found = server.admin_json(
                "GET", "users", params={"email": "r1@example.com", "exact": "true"}
            )
            figures["delta_arrived"]["changed_email_found"] = len(found) == 1
            figures["delta_arrived"]["ok"] &= len(found) == 1
        figures["delta_arrived"]["ok"] &= complete(figures["delta_drain"])
        figures["load_end"] = os.getloadavg()
    finally:
        sink.stop()
        if bench is not None:
            bench.close()
        if started_here:
            progress("keycloak: stopping Keycloak...")
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def print_end_to_end(e2e: dict[str, Any]) -> None:
    n = e2e["users"]
    print(
        f"\ndirectory -> Keycloak end to end (Keycloak {e2e['keycloak']}, plugin; {n:,} people, "
        f"{e2e['groups']} groups; outbox worker in-process)"
    )
    print(
        f"load average at start {e2e['load_start'][0]:.1f}, at the end "
        f"{e2e.get('load_end', [float('nan')])[0]:.1f}"
    )

    def drained(row: dict[str, Any]) -> str:
        text = (
            f"entries {row['entries']:,}, done {row['done']:,}, skipped {row['skipped']}, "
            f"bulk {row['bulk']:,} users, calls {row['calls']:,}, retried {row['retried']}, "
            f"new poison {row['new_poison']}, left {row['left_pending']}, "
            f"emails {row['emails']:,}"
        )
        return text + f"; peak load {row['peak_load_1min']:.1f}"

    def landed(row: dict[str, Any]) -> str:
        verdict = "ok" if row["ok"] else "INCOMPLETE (see the drain's poison and errors)"
        text = (
            f"{verdict}: {row['organization_members']:,} organization members, "
            f"{row['keycloak_users']:,} users of the seller in Keycloak (store "
            f"{row['store_users']:,}), {row['keycloak_enabled']:,} enabled (store active "
            f"{row['store_active']:,}), {row['store_without_keycloak_id']} without a Keycloak id"
        )
        if "changed_email_found" in row:
            text += f", changed email found: {row['changed_email_found']}"
        return text

    def row(label: str, seconds: float, detail: str) -> None:
        print(f"  {label:<38} {seconds:8.2f} s  {detail}")

    first, drain = e2e["first_full"], e2e["first_drain"]
    detail = ", ".join(f"{k} {v}" for k, v in first.items() if k not in ("s", "ok") and v)
    row("(a) first full sync into the store", first["s"], f"({detail})")
    row("(b) outbox drained into Keycloak", drain["s"], f"({drained(drain)})")
    row("    total", e2e["first_total_s"], f"= {e2e['users_per_s']:.1f} users/s end to end")
    print(f"      arrived: {landed(e2e['first_arrived'])}")
    delta, drain = e2e["delta"], e2e["delta_drain"]
    detail = ", ".join(
        f"{k} {v}" for k, v in delta.items() if k not in ("s", "changes", "ok") and v
    )
    row(f"(c) delta after {delta['changes']} changes", delta["s"], f"({detail})")
    row("    drained into Keycloak", drain["s"], f"({drained(drain)})")
    row("    until Keycloak has them", e2e["delta_total_s"], "")
    print(f"      arrived: {landed(e2e['delta_arrived'])}")
    for key in ("setup_drain", "first_drain", "delta_drain"):
        for error in e2e[key]["errors"]:
            print(f"      {key} error: {error}")


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
    parser.add_argument(
        "--keycloak",
        action="store_true",
        help="then also time the directory -> Keycloak path end to end for the same --users: "
        "a real Keycloak 26.7.3 with the plugin (started here, or "
        "SELLER_CONNECTOR_TEST_KEYCLOAK_URL), the first full sync, the outbox worker draining "
        "it into Keycloak, and a delta after --changes changes with its drain",
    )
    parser.add_argument(
        "--keycloak-warmup",
        type=int,
        default=200,
        help="with --keycloak: users of another seller pushed first, untimed, to warm the JVM",
    )
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
    if args.keycloak:
        figures["keycloak"] = end_to_end(
            args.users, args.groups, args.changes, args.keycloak_warmup
        )
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
    if "keycloak" in figures:
        print_end_to_end(figures["keycloak"])

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"ldap_sync-{stamp}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
