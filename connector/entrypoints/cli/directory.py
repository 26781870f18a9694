"""seller-connector directory ...: sync a corporate directory (LDAP / AD) into a seller account.

``check`` validates a source's file and tests the bind, ``sync`` runs once (``--dry-run``
to see the plan), ``watch`` runs delta syncs on a schedule. Progress goes to stderr;
the result goes to stdout, as a table for people or JSON for scripts.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import Any

import click

from connector.domain.errors import DomainError
from connector.domain.model import Plan, text_key
from connector.entrypoints.cli.context import CliContext, pass_context
from connector.entrypoints.cli.output import emit_json, table
from connector.mappings import MappingError
from connector.ports.directory import DirectoryError, ThresholdExceeded
from connector.services.directory.plan import (
    Action,
    CreateUser,
    Deactivate,
    Reactivate,
    SetPermissionSets,
    UpdateUser,
)
from connector.services.directory.sync import SyncResult, SyncState, run_sync
from connector.services.directory.target import MARKER_PREFIX, StoreDirectoryTarget
from connector.services.sellers import find_seller
from connector.settings import ConfigurationError

EXIT_OK = 0
EXIT_FAILURES = 1
"""Some changes were refused by the seller rules (listed); the rest was applied."""
EXIT_CONFIG = 2
"""The source file, its password, or the seller it names cannot be used."""
EXIT_DIRECTORY = 3
"""The directory could not be read completely: nothing was changed."""
EXIT_THRESHOLD = 4
"""The run would deactivate more users than the threshold allows: nothing was changed."""

EXIT_CODES_HELP = """\b
Exit codes:
  0  done (entries skipped for a problem are listed, they do not fail the run)
  1  some changes were refused by the seller rules (listed; the rest was applied)
  2  the source file, its password or its seller cannot be used
  3  the directory could not be read completely (nothing was changed)
  4  over the deactivation threshold (nothing was changed; --force to apply)
"""

DirectoryConfig = Any
"""A validated directory source file (the LDAP adapter's model; see Connector.directory_config)."""

FORMATS = click.Choice(["table", "json"])
SHOWN = 50  # changes listed in a table; JSON lists all of them


class _Exit(Exception):
    """Stop a command with a message on stderr and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _load(ctx: CliContext, path: Path) -> DirectoryConfig:
    try:
        return ctx.connector.directory_config(path)
    except MappingError as exc:
        raise _Exit(EXIT_CONFIG, f"Invalid directory source file:\n{exc}") from exc


def _config_argument(func: Any) -> Any:
    return click.argument(
        "config_path",
        metavar="CONFIG",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
    )(func)


def _format_option(func: Any) -> Any:
    return click.option(
        "--format",
        "output_format",
        type=FORMATS,
        default="table",
        show_default=True,
        help="table for people; json for scripts.",
    )(func)


def _fail(exc: _Exit, output_format: str, **context: Any) -> None:
    click.echo(f"Error: {exc.message}", err=True)
    if output_format == "json":
        emit_json({"ok": False, "exit_code": exc.code, "error": exc.message, **context})
    raise click.exceptions.Exit(exc.code)


@contextmanager
def _errors(config: DirectoryConfig | None) -> Iterator[None]:
    """Turn what can stop a run into an exit code and a message a person can act on."""
    source = f"directory source {config.id!r}" if config else "directory source"
    try:
        yield
    except ConfigurationError as exc:
        raise _Exit(EXIT_CONFIG, str(exc)) from exc
    except DirectoryError as exc:
        raise _Exit(
            EXIT_DIRECTORY,
            f"{source}: {exc}\nNothing was changed in the store.",
        ) from exc
    except ThresholdExceeded as exc:
        raise _Exit(EXIT_THRESHOLD, f"{source}: {exc}") from exc
    except DomainError as exc:  # the seller named by the file does not exist
        raise _Exit(EXIT_CONFIG, f"{source}: {exc.detail} Check the seller section.") from exc


@click.group()
def directory() -> None:
    """Sync a corporate directory (OpenLDAP, Active Directory) into a seller account.

    A source is a YAML file (examples in mappings/directory/); its bind password comes
    from the environment variable or file the file names, never from the file itself.
    Start with `directory check CONFIG`, then `directory sync CONFIG --dry-run`.
    """


# -- check ----------------------------------------------------------------------------


@dataclass
class _Check:
    name: str
    ok: bool | None  # None: for information
    detail: str


@directory.command("check", epilog="Exit codes: 0 every check passed, 1 one failed, 2 bad file.")
@_config_argument
@_format_option
@click.option(
    "--no-count", is_flag=True, help="Skip counting the users in scope (a full, paged read)."
)
@pass_context
def check(ctx: CliContext, config_path: Path, output_format: str, no_count: bool) -> None:
    """Validate CONFIG and test it: password, bind, base DN, groups, seller, permission sets.

    Nothing is changed, in the directory or in the store. Counting the users in scope
    also proves that the sync account reads them all (no size limit).
    """
    try:
        config = _load(ctx, config_path)
    except _Exit as exc:
        _fail(exc, output_format)
        return
    checks = [
        _Check(
            "config",
            True,
            f"{config_path}: source {config.id} ({config.preset.value}) at {config.url}, "
            f"TLS {config.tls.mode.value}, base {config.base_dn}",
        )
    ]
    checks += _check_directory(ctx, config, count=not no_count)
    checks += _check_store(ctx, config)
    failed = [c for c in checks if c.ok is False]
    if output_format == "json":
        emit_json(
            {
                "source": config.id,
                "ok": not failed,
                "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
            }
        )
    else:
        marks = {True: "ok", False: "FAIL", None: "info"}
        click.echo(
            table(["check", "result", "detail"], [[c.name, marks[c.ok], c.detail] for c in checks])
        )
        click.echo(
            f"\n{len(failed)} check(s) failed."
            if failed
            else "\nEverything checks out: try "
            f"`seller-connector directory sync {config_path} --dry-run`."
        )
    raise click.exceptions.Exit(EXIT_FAILURES if failed else EXIT_OK)


def _check_directory(ctx: CliContext, config: DirectoryConfig, *, count: bool) -> list[_Check]:
    checks: list[_Check] = []
    secret = (
        f"environment variable {config.bind_password_env}"
        if config.bind_password_env
        else f"file {config.bind_password_file}"
    )
    try:
        config.read_bind_password()
    except ConfigurationError as exc:
        return [_Check("password", False, str(exc))]
    checks.append(_Check("password", True, f"read from the {secret} (not shown)"))
    reader = ctx.connector.directory_reader(config)
    try:
        reader.connect()
        checks.append(_Check("bind", True, f"bound as {config.bind_dn}"))
        list(reader.search(config.base_dn, "(objectClass=*)", [], scope="BASE", what="base_dn"))
        checks.append(_Check("base_dn", True, f"{config.base_dn} exists"))
        tracking = reader.tracking()
        # DirSync's mark is a pass over the whole domain: left to the first run.
        marker = reader.current_marker() if tracking.value != "dirsync" else None
        sees = tracking.value in ("syncrepl", "dirsync")
        checks.append(
            _Check(
                "change tracking",
                True,
                f"{tracking.value}"
                + (f": the server's mark is {marker.value}" if marker and marker.value else "")
                + (
                    "; deltas see deleted and moved-out users"
                    if sees
                    else "; deleted users are seen by full runs only"
                )
                + "".join(f"; {note}" for note in reader.notes),
            )
        )
        index = reader.group_index()
        checks.append(
            _Check(
                "groups",
                True,
                f"{len(config.groups.map)} mapped group(s) found"
                + (
                    f", {len(index)} with nested ones"
                    if len(index) > len(config.groups.map)
                    else ""
                ),
            )
        )
        if count:
            users = sum(
                1
                for _ in reader.search(
                    config.base_dn, config.effective_user_filter, [], what="users"
                )
            )
            checks.append(
                _Check(
                    "users", True, f"{users} entries match {config.effective_user_filter}, all read"
                )
            )
    except (DirectoryError, ConfigurationError) as exc:
        step = ["bind", "base_dn", "change tracking", "groups", "users"][len(checks) - 1]
        checks.append(_Check(step, False, str(exc)))
    finally:
        reader.close()
    return checks


def _check_store(ctx: CliContext, config: DirectoryConfig) -> list[_Check]:
    ref = config.seller_id or config.seller_name or ""
    with ctx.connector.uow() as uow:
        try:
            seller = find_seller(uow, ref)
        except DomainError as exc:
            return [_Check("seller", False, f"{exc.detail} Check the seller section of the file.")]
        checks = [
            _Check(
                "seller",
                seller.plan is Plan.professional,
                f"{seller.name} ({seller.id}), {seller.plan.value} plan"
                + (
                    ""
                    if seller.plan is Plan.professional
                    else ": secondary users need the professional plan, nothing would be created"
                ),
            )
        ]
        existing = {text_key(s.display_name) for s in uow.permission_sets.list(seller.id)}
        missing = sorted(n for n in config.managed_permission_sets if text_key(n) not in existing)
        checks.append(
            _Check(
                "permission sets",
                not missing,
                f"missing for this seller: {', '.join(missing)} (create them as SCIM Groups, "
                "or fix groups.map)"
                if missing
                else ", ".join(sorted(config.managed_permission_sets)),
            )
        )
        state = SyncState.load(uow.markers.get(MARKER_PREFIX + config.id))
        linked = len(ctx.connector.directory_links(uow).for_source(config.id, seller.id))
    checks.append(
        _Check(
            "last sync",
            None,
            "never synced: the first run is a full run"
            if state is None
            else f"last full run {state.full_at.isoformat(timespec='seconds')}, "
            f"{state.runs_since_full} delta run(s) since; {linked} user(s) linked to this source",
        )
    )
    return checks


# -- sync -----------------------------------------------------------------------------


def _progress(quiet: bool) -> Callable[[str], None]:
    if quiet:
        return lambda _line: None
    return lambda line: click.echo(line, err=True)


@directory.command("sync", epilog=EXIT_CODES_HELP)
@_config_argument
@click.option("--dry-run", is_flag=True, help="Read and plan, show the plan, change nothing.")
@click.option(
    "--full",
    is_flag=True,
    help="Read the whole directory (deltas cannot see deleted entries). The first run, "
    "and every full_reconcile_every, is full anyway.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Apply even when more users would be deactivated than deactivation_threshold.",
)
@_format_option
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--verbose", "-v", is_flag=True, help="Every planned change on stderr too.")
@click.option(
    "--progress-every",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="A progress line every N entries read and changes applied (0: none).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Changes per database transaction (1: one per change).",
)
@pass_context
def sync(
    ctx: CliContext,
    config_path: Path,
    dry_run: bool,
    full: bool,
    force: bool,
    output_format: str,
    quiet: bool,
    verbose: bool,
    progress_every: int,
    batch_size: int,
) -> None:
    """Sync the directory source CONFIG into its seller account, once.

    Creates users for new directory entries in mapped groups (and invites them),
    updates changed emails and names, sets their permission sets, and deactivates
    (never deletes) those who left, left every mapped group or are disabled. The
    primary user and users provisioned otherwise (SCIM) are never touched.
    Every change reaches the identity provider through the outbox.
    """
    config: DirectoryConfig | None = None
    try:
        config = _load(ctx, config_path)
        target = ctx.connector.directory_target(config)
        started = time.monotonic()
        with _errors(config), ctx.connector.directory_reader(config) as reader:
            result = run_sync(
                config,
                reader,
                target,
                dry_run=dry_run,
                full=full,
                force=force,
                progress=_progress(quiet),
                progress_every=progress_every,
                describe=verbose,
                batch_size=batch_size,
            )
        duration = time.monotonic() - started
    except _Exit as exc:
        _fail(exc, output_format, source=config.id if config else None, dry_run=dry_run)
        return
    seller_name = _seller_name(target, result.plan.seller_id)
    # A table lists the first SHOWN changes: a plan of 100,000 is never held as rows.
    report = _report(
        config, result, seller_name, duration, shown=None if output_format == "json" else SHOWN
    )
    if output_format == "json":
        emit_json(report)
    else:
        click.echo(_report_table(report, result))
    if result.blocked:
        click.echo(f"Error: {result.blocked}", err=True)
        raise click.exceptions.Exit(EXIT_THRESHOLD)
    raise click.exceptions.Exit(EXIT_OK if result.ok else EXIT_FAILURES)


def _seller_name(target: StoreDirectoryTarget, seller_id: str) -> str:
    with target.uow_factory() as uow:
        return find_seller(uow, seller_id).name


def _action_json(action: Action) -> dict[str, Any]:
    match action:
        case CreateUser():
            return {
                "kind": "create",
                "stable_id": action.stable_id,
                "dn": action.dn,
                "email": action.email,
                "given_name": action.given_name,
                "family_name": action.family_name,
                "permission_sets": sorted(action.permission_sets),
            }
        case UpdateUser():
            return {
                "kind": "update",
                "user_id": action.user_id,
                "stable_id": action.stable_id,
                "changes": [{"field": f, "from": old, "to": new} for f, old, new in action.changes],
            }
        case SetPermissionSets():
            return {
                "kind": "permissions",
                "user_id": action.user_id,
                "stable_id": action.stable_id,
                "added": sorted(action.added),
                "removed": sorted(action.removed),
            }
        case Deactivate():
            return {
                "kind": "deactivate",
                "user_id": action.user_id,
                "stable_id": action.stable_id,
                "reason": action.reason.value,
            }
        case Reactivate():
            return {"kind": "reactivate", "user_id": action.user_id, "stable_id": action.stable_id}


_KINDS = (
    ("create", "creates"),
    ("update", "updates"),
    ("permissions", "permission_changes"),
    ("deactivate", "deactivations"),
    ("reactivate", "reactivations"),
)


def _report(
    config: DirectoryConfig,
    result: SyncResult,
    seller_name: str,
    duration: float,
    *,
    shown: int | None = None,
) -> dict[str, Any]:
    """What a run did, as data (the JSON output; the table is made from it).

    ``shown``: list only the first so many changes (None: all of them).
    """
    plan = result.plan
    applied = Counter(_action_json(a)["kind"] for a in result.applied)
    failed = Counter(_action_json(f.action)["kind"] for f in result.failures)
    planned = {
        "create": len(plan.creates),
        "update": len(plan.updates),
        "permissions": len(plan.permission_changes),
        "deactivate": len(plan.deactivations),
        "reactivate": len(plan.reactivations),
    }
    return {
        "source": config.id,
        "seller": {"id": plan.seller_id, "name": seller_name},
        "run": "full" if result.full else "delta",
        "dry_run": result.dry_run,
        "ok": result.ok,
        "marker_stored": result.marker_stored,
        "duration_s": round(duration, 3),
        "directory_users": plan.directory_users,
        "unchanged": plan.unchanged,
        "counts": {
            key: {"planned": planned[kind], "applied": applied[kind], "refused": failed[kind]}
            for kind, key in _KINDS
        },
        "problems": [{"subject": p.subject, "message": p.message} for p in result.problems],
        "failures": [
            {"change": _action_json(f.action), "message": f.message} for f in result.failures
        ],
        "changes": [_action_json(a) for a in islice(plan.actions(), shown)],
        "changes_total": len(plan.actions()),
        "blocked": result.blocked,
    }


def _describe_short(change: dict[str, Any]) -> tuple[str, str, str]:
    kind = change["kind"]
    who = change.get("email") or change.get("user_id", "")
    match kind:
        case "create":
            detail = "sets: " + (", ".join(change["permission_sets"]) or "none")
        case "update":
            detail = "; ".join(f"{c['field']}: {c['from']} -> {c['to']}" for c in change["changes"])
        case "permissions":
            detail = " ".join(
                [f"+{n}" for n in change["added"]] + [f"-{n}" for n in change["removed"]]
            )
        case "deactivate":
            detail = change["reason"]
        case _:
            detail = ""
    return kind, who, detail


def _report_table(report: dict[str, Any], result: SyncResult) -> str:
    lines = []
    mode = "dry run, nothing changed" if report["dry_run"] else "applied"
    lines.append(
        f"Directory source {report['source']} -> seller {report['seller']['name']} "
        f"({report['seller']['id']}): {report['run']} run, {mode}, "
        f"{report['directory_users']} directory entries read in {report['duration_s']:.1f} s"
    )
    lines.append("")
    rows = []
    for _kind, key in _KINDS:
        c = report["counts"][key]
        label = key.replace("_", " ")
        rows.append([label, c["planned"], "-" if report["dry_run"] else c["applied"], c["refused"]])
    rows.append(["unchanged", report["unchanged"], "", ""])
    rows.append(["problems (skipped entries)", len(report["problems"]), "", ""])
    lines.append(table(["change", "planned", "applied", "refused"], rows))

    changes, total = report["changes"], report["changes_total"]
    if changes and (report["dry_run"] or total <= SHOWN):
        lines.append("")
        lines.append("Changes" + (" (planned)" if report["dry_run"] else "") + ":")
        shown = [_describe_short(c) for c in changes[:SHOWN]]
        lines.append(table(["change", "user", "detail"], shown))
        if total > SHOWN:
            lines.append(f"... and {total - SHOWN} more (--format json lists them all)")

    if report["failures"]:
        lines.append("")
        lines.append("Refused by the seller rules (the rest was applied):")
        # Grouped: an individual plan refuses every create with the same sentence.
        grouped: dict[str, list[str]] = {}
        for f in result.failures:
            grouped.setdefault(f.message, []).append(_describe_short(_action_json(f.action))[1])
        rows = [
            [len(who), ", ".join(who[:3]) + (" ..." if len(who) > 3 else ""), message]
            for message, who in grouped.items()
        ]
        lines.append(table(["count", "users", "reason"], rows))

    if report["problems"]:
        lines.append("")
        lines.append("Problems (entries skipped, the rest went on):")
        shown_p = [[p["subject"], p["message"]] for p in report["problems"][:SHOWN]]
        lines.append(table(["entry", "problem"], shown_p))
        if len(report["problems"]) > SHOWN:
            lines.append(f"... and {len(report['problems']) - SHOWN} more")

    lines.append("")
    if report["dry_run"]:
        lines.append(
            f"Dry run: {report['blocked']}"
            if report["blocked"]
            else "Dry run: nothing was changed."
        )
    elif report["marker_stored"]:
        lines.append("Done: the next run is a delta from here.")
    else:
        lines.append(
            "Some changes were refused: the sync state was not advanced, so the next run "
            "reads these entries again."
        )
    return "\n".join(lines)


# -- watch ----------------------------------------------------------------------------


class _Stop:
    """SIGTERM / SIGINT: the first asks to stop after the current run, a second stops now."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self.event.set()

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _log(**fields: Any) -> None:
    click.echo(json.dumps(fields, default=str))


@directory.command("watch")
@_config_argument
@click.option(
    "--interval",
    type=click.FloatRange(min=1),
    required=True,
    help="Seconds from the start of one run to the start of the next.",
)
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many runs (default: until SIGTERM or Ctrl-C).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Changes per database transaction.",
)
@pass_context
def watch(
    ctx: CliContext, config_path: Path, interval: float, max_runs: int | None, batch_size: int
) -> None:
    """Sync CONFIG on a schedule: delta runs, and a full run when full_reconcile_every
    says one is due. One JSON line per run on stdout (counts, duration, errors).

    A failed run (directory unreachable, over the threshold, database error...) is
    logged and the schedule goes on; nothing is ever forced. SIGTERM or Ctrl-C stops after the
    current run (a second one stops at once: each change is its own transaction,
    and the next run picks up from the last stored state). Exit code 0 when stopped
    by a signal; with --max-runs, 0 when the last run succeeded, 1 otherwise.
    """
    try:
        config = _load(ctx, config_path)
        config.read_bind_password()  # a missing password will not fix itself: fail now
    except (_Exit, ConfigurationError) as exc:
        message = exc.message if isinstance(exc, _Exit) else str(exc)
        click.echo(f"Error: {message}", err=True)
        raise click.exceptions.Exit(EXIT_CONFIG) from exc
    target = ctx.connector.directory_target(config)
    runs = 0
    last_ok = True
    _log(
        event="watch-started",
        source=config.id,
        interval_s=interval,
        max_runs=max_runs,
        at=_now(),
    )
    with _Stop() as stop:
        try:
            while not stop.event.is_set():
                started = time.monotonic()
                runs += 1
                line = _watch_run(ctx, config, target, runs, batch_size)
                last_ok = line["status"] == "ok"
                _log(**line)
                if max_runs is not None and runs >= max_runs:
                    stop.reason = stop.reason or "max-runs"
                    break
                stop.event.wait(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            _log(
                event="watch-stopped", source=config.id, runs=runs, reason="interrupted", at=_now()
            )
            raise click.exceptions.Exit(130) from None
    _log(event="watch-stopped", source=config.id, runs=runs, reason=stop.reason, at=_now())
    if stop.reason == "max-runs" and not last_ok:
        raise click.exceptions.Exit(EXIT_FAILURES)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _watch_run(
    ctx: CliContext,
    config: DirectoryConfig,
    target: StoreDirectoryTarget,
    number: int,
    batch_size: int,
) -> dict[str, Any]:
    line: dict[str, Any] = {"event": "sync", "source": config.id, "run": number, "at": _now()}
    started = time.monotonic()
    try:
        with _errors(config), ctx.connector.directory_reader(config) as reader:
            result = run_sync(config, reader, target, describe=False, batch_size=batch_size)
    except _Exit as exc:
        status = {
            EXIT_DIRECTORY: "directory-error",
            EXIT_THRESHOLD: "threshold-exceeded",
            EXIT_CONFIG: "config-error",
        }[exc.code]
        line.update(status=status, error=exc.message)
    except Exception as exc:  # a daemon logs it and keeps its schedule
        # E.g. the database is locked or restarting: each change is its own
        # transaction and the marker did not move, so the next run picks up from here.
        line.update(status="error", error=f"{type(exc).__name__}: {exc}")
    else:
        plan = result.plan
        line.update(
            status="ok" if result.ok else "refused-changes",
            kind="full" if result.full else "delta",
            directory_users=plan.directory_users,
            creates=len(plan.creates),
            updates=len(plan.updates),
            permission_changes=len(plan.permission_changes),
            deactivations=len(plan.deactivations),
            reactivations=len(plan.reactivations),
            applied=len(result.applied),
            problems=len(result.problems),
            refused=len(result.failures),
            errors=[str(f) for f in result.failures[:20]],
        )
    line["duration_s"] = round(time.monotonic() - started, 3)
    return line


COMMANDS = (directory,)
