"""seller-connector worker / outbox / keycloak poll / reconcile: the store and Keycloak in step.

Keycloak is configured by ``SELLER_CONNECTOR_KEYCLOAK_*`` (see deploy/keycloak/README.md);
the outbox worker's tuning by ``SELLER_CONNECTOR_OUTBOX_*`` (see
``connector.services.outbox.OutboxPolicy``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from connector.bootstrap import keycloak_configured
from connector.domain.errors import DomainError
from connector.domain.model import utcnow
from connector.entrypoints.cli.context import CliContext, pass_context
from connector.entrypoints.cli.output import emit_json, table
from connector.ports.identity import (
    Difference,
    IdentityProviderRejected,
    IdentityProviderUnavailable,
)
from connector.ports.outbox import STATES, OutboxQueue
from connector.services.console import PollReport
from connector.services.outbox import OutboxPolicy, OutboxWorker, RoundReport
from connector.services.reconcile import compare, reconcile
from connector.settings import ConfigurationError

JSON_OR_TABLE = click.Choice(["table", "json"])

NOT_CONFIGURED = (
    "Keycloak is not configured: set SELLER_CONNECTOR_KEYCLOAK_URL and "
    "SELLER_CONNECTOR_KEYCLOAK_CLIENT_SECRET (or _CLIENT_SECRET_FILE); see "
    "deploy/keycloak/README.md"
)


def _format_option(func: Any) -> Any:
    return click.option(
        "--format",
        "output_format",
        type=JSON_OR_TABLE,
        default="table",
        show_default=True,
        help="table for people, json for scripts.",
    )(func)


def _check_keycloak(ctx: CliContext) -> None:
    """Stop with a clear message when Keycloak is not (completely) configured."""
    if not keycloak_configured():
        raise click.ClickException(NOT_CONFIGURED)
    try:
        ctx.connector.keycloak_settings()
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from error


def _policy(**overrides: Any) -> OutboxPolicy:
    try:
        policy = OutboxPolicy.from_env()
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    values = {k: v for k, v in overrides.items() if v is not None}
    return OutboxPolicy(**{**policy.__dict__, **values}) if values else policy


def _worker(ctx: CliContext, policy: OutboxPolicy, console: bool = True) -> OutboxWorker:
    _check_keycloak(ctx)
    return ctx.connector.outbox_worker(policy=policy, console=console)


def _log_to_stderr(level: int) -> None:
    # No request bodies, tokens or secrets reach these loggers; errors are Keycloak's words.
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT, so that loops end after their current call."""
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _round_rows(report: RoundReport) -> list[list[Any]]:
    return [
        ["aggregates claimed", report.aggregates],
        ["entries", report.entries],
        ["done", report.done],
        ["skipped (nothing to send)", report.skipped],
        ["retry later", report.retried],
        ["poison", report.poisoned],
        ["Keycloak calls", report.calls],
    ]


def _poll_rows(report: PollReport) -> list[list[Any]]:
    return [
        [
            o.at.isoformat(timespec="seconds"),
            o.kind,
            o.user_id or o.provider_user_id,
            o.result,
            o.detail,
        ]
        for o in report.outcomes
    ]


# ---------------------------------------------------------------------- worker


@click.command(
    "worker", epilog="Exit codes (--once): 0 all applied, 1 some entries wait or are poison."
)
@click.option("--once", is_flag=True, help="Poll the console once, apply what is due, and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(0.05, 3600),
    default=None,
    help="Seconds between rounds when idle [default: 1, or SELLER_CONNECTOR_OUTBOX_INTERVAL].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Aggregates applied at once [default: 4, or SELLER_CONNECTOR_OUTBOX_CONCURRENCY].",
)
@click.option("--no-console", is_flag=True, help="Do not poll Keycloak's console changes.")
@_format_option
@pass_context
def worker(
    ctx: CliContext,
    once: bool,
    interval: float | None,
    concurrency: int | None,
    no_console: bool,
    output_format: str,
) -> None:
    """Apply the outbox to Keycloak, in order per user, seller and permission set.

    Pending changes are claimed, read as the store has them now, and applied; when Keycloak is
    down they are retried with exponential backoff (for up to SELLER_CONNECTOR_OUTBOX_MAX_OUTAGE
    seconds, a day), and after SELLER_CONNECTOR_OUTBOX_MAX_ATTEMPTS (8) other failures, or when
    Keycloak refuses one, they become poison (see `outbox status`, `outbox retry --poison`).
    Every few seconds the console changes are polled too. Run ONE worker per deployment
    (serve's gunicorn_hooks start one); more are safe, not faster.
    """
    policy = _policy(interval=interval, concurrency=concurrency)
    outbox_worker = _worker(ctx, policy, console=not no_console)
    if once:
        _log_to_stderr(logging.WARNING)
        report, poll = outbox_worker.run_once()
        if output_format == "json":
            emit_json({"outbox": report.as_dict(), "console": poll.as_dict() if poll else None})
        else:
            click.echo(table(["outbox", "count"], _round_rows(report)))
            for error in report.errors:
                click.echo(
                    f"  {error['state']}: {error['aggregate']} ({', '.join(error['topics'])}): "
                    f"{error['error']}"
                )
            if poll is not None:
                started = " (first poll: changes are read from now on)" if poll.started else ""
                click.echo(f"console changes: {len(poll.outcomes)}{started}")
                if poll.outcomes:
                    click.echo(
                        table(["at", "change", "user", "result", "detail"], _poll_rows(poll))
                    )
        if report.retried or report.poisoned:
            sys.exit(1)
        return
    _log_to_stderr(logging.INFO)
    click.echo(
        f"seller-connector worker: applying the outbox to {outbox_worker.idp.settings.url} "  # type: ignore[attr-defined]
        "(Ctrl-C or SIGTERM to stop)",
        err=True,
    )
    with _stop_on_signals() as stop:
        outbox_worker.run(stop, policy.interval)


# ---------------------------------------------------------------------- outbox


@click.group("outbox")
def outbox() -> None:
    """The changes waiting to reach Keycloak."""


def _queue(ctx: CliContext) -> OutboxQueue:
    return ctx.connector.outbox_queue()


@outbox.command("status")
@_format_option
@pass_context
def outbox_status(ctx: CliContext, output_format: str) -> None:
    """Entries by state, the oldest pending one's age, and whether a worker can run."""
    stats = _queue(ctx).stats(utcnow())
    configured = keycloak_configured()
    data = {
        "counts": stats.counts,
        "oldestPendingAgeSeconds": (
            round(stats.oldest_pending_age, 1) if stats.oldest_pending_age is not None else None
        ),
        "waitingForRetry": stats.waiting_for_retry,
        "nextRetryAt": stats.next_retry_at.isoformat() if stats.next_retry_at else None,
        "keycloakConfigured": configured,
    }
    if output_format == "json":
        emit_json(data)
        return
    click.echo(table(["state", "entries"], [[s, stats.counts.get(s, 0)] for s in STATES]))
    click.echo(f"oldest pending: {_age(stats.oldest_pending_age)}")
    if stats.waiting_for_retry:
        assert stats.next_retry_at is not None
        click.echo(
            f"waiting for a retry: {stats.waiting_for_retry} "
            f"(next at {stats.next_retry_at.isoformat(timespec='seconds')})"
        )
    if stats.counts.get("poison"):
        click.echo("poison entries: see `seller-connector outbox list --state poison`")
    if not configured:
        click.echo(f"worker: none can run. {NOT_CONFIGURED}.")


@outbox.command("list")
@click.option(
    "--state", type=click.Choice(STATES), default=None, help="Only entries in this state."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_format_option
@pass_context
def outbox_list(ctx: CliContext, state: str | None, limit: int, output_format: str) -> None:
    """The newest entries (with their last error), newest first."""
    entries = _queue(ctx).entries(state, limit)
    if output_format == "json":
        emit_json(
            [
                {
                    "id": e.id,
                    "sellerId": e.seller_id,
                    "topic": e.topic,
                    "aggregateId": e.aggregate_id,
                    "state": e.state,
                    "attempts": e.attempts,
                    "createdAt": e.created_at.isoformat() if e.created_at else None,
                    "nextAttemptAt": e.next_attempt_at.isoformat() if e.next_attempt_at else None,
                    "lastError": e.last_error,
                }
                for e in entries
            ]
        )
        return
    rows = [
        [e.id, e.topic, e.aggregate_id, e.state, e.attempts, (e.last_error or "")[:80]]
        for e in entries
    ]
    click.echo(
        table(["id", "topic", "aggregate", "state", "attempts", "last error"], rows)
        if rows
        else "(none)"
    )


@outbox.command("retry")
@click.option(
    "--poison", is_flag=True, help="Also put poison entries back in line (attempts reset)."
)
@click.option("--id", "ids", type=int, multiple=True, help="Only this entry (repeatable).")
@pass_context
def outbox_retry(ctx: CliContext, poison: bool, ids: tuple[int, ...]) -> None:
    """Make entries that wait for a retry due now; with --poison, requeue poison ones too."""
    moved = _queue(ctx).requeue(utcnow(), poison=poison, ids=list(ids) or None)
    click.echo(f"{moved} entries requeued.")


# ---------------------------------------------------------------------- console changes


@click.group("keycloak")
def keycloak() -> None:
    """Keycloak: console changes."""


@keycloak.command("poll")
@click.option("--once", is_flag=True, help="Poll once and exit (default: poll until stopped).")
@click.option(
    "--interval",
    type=click.FloatRange(0.5, 3600),
    default=5.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option(
    "--from-start",
    is_flag=True,
    help="With no marker stored yet, replay Keycloak's stored events instead of starting now.",
)
@_format_option
@pass_context
def poll(
    ctx: CliContext, once: bool, interval: float, from_start: bool, output_format: str
) -> None:
    """Take what administrators changed in the Keycloak console into the store.

    Disabled and enabled users, permission-set group memberships, logins and accepted
    invitations are applied as the actor keycloak:console. Changes the seller rules forbid
    (the primary disabled, a deleted user enabled) are reverted through the outbox and
    recorded in the audit trail. The marker is kept in the store.
    """
    _check_keycloak(ctx)
    one = ctx.connector.console_poller(from_start=from_start)

    if once:
        try:
            report = one()
        except (IdentityProviderUnavailable, IdentityProviderRejected) as error:
            raise click.ClickException(str(error)) from error
        if output_format == "json":
            emit_json(report.as_dict())
        elif report.started:
            click.echo("First poll: console changes are read from now on.")
        else:
            click.echo(
                table(["at", "change", "user", "result", "detail"], _poll_rows(report))
                if report.outcomes
                else "No console changes."
            )
        return
    _log_to_stderr(logging.INFO)
    with _stop_on_signals() as stop:
        while not stop.is_set():
            try:
                report = one()
                if output_format == "json" and report.outcomes:
                    emit_json(report.as_dict())
            except IdentityProviderUnavailable as error:
                logging.getLogger("seller_connector.console").warning("%s", error)
            stop.wait(interval)


# ---------------------------------------------------------------------- reconcile


def _difference_rows(differences: list[Difference]) -> list[list[Any]]:
    def short(value: Any) -> str:
        if isinstance(value, set | frozenset | list | tuple):
            value = ", ".join(sorted(str(v) for v in value)) or "(none)"
        text = "-" if value is None else str(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return [
        [
            d.seller_id,
            d.kind,
            d.target,
            d.field,
            short(d.expected),
            short(d.actual),
            d.repair[0] if d.repair else "report only",
        ]
        for d in differences
    ]


@click.command(
    "reconcile", epilog="Exit codes: 0 no difference (left), 1 differences found (or left)."
)
@click.option("--seller", "seller_ref", default=None, help="Only this seller (id or name).")
@click.option("--dry-run", is_flag=True, help="Only print the differences; change nothing.")
@click.option("--no-poll", is_flag=True, help="Do not take console changes in first.")
@_format_option
@pass_context
def reconcile_command(
    ctx: CliContext, seller_ref: str | None, dry_run: bool, no_poll: bool, output_format: str
) -> None:
    """Compare every seller (or one) in the store with Keycloak, print each difference, and
    repair them through the outbox (then applied at once).

    Checked: the organization; each user's existence, enabled flag, username, email, names,
    attributes, organization membership, roles and groups; each permission set's group and
    roles; stray groups. Keycloak users are never deleted: unknown or duplicate ones are
    reported only. Console changes are taken in first (keycloak poll) so that they are adopted,
    not undone.
    """
    _log_to_stderr(logging.WARNING)
    _check_keycloak(ctx)
    connector = ctx.connector
    inspector = connector.inspector()
    outbox_worker = _worker(ctx, _policy())
    try:
        if not dry_run and not no_poll:
            outbox_worker.poll_console(force=True)
        report = reconcile(connector.uow, inspector, seller_ref, dry_run=dry_run, actor=ctx.actor)
        applied: RoundReport | None = None
        remaining: list[Difference] = report.differences
        if not dry_run and report.repairs:
            applied = outbox_worker.drain()
            _, remaining = compare(connector.uow, inspector, seller_ref)
        elif not dry_run:
            remaining = [d for d in report.differences if d.repair is not None]
    except DomainError as error:
        raise click.ClickException(error.detail) from error
    except (IdentityProviderUnavailable, IdentityProviderRejected) as error:
        raise click.ClickException(f"Keycloak: {error}") from error
    if output_format == "json":
        emit_json(
            {
                **report.as_dict(),
                "applied": applied.as_dict() if applied else None,
                "remaining": [d.as_dict() for d in remaining] if not dry_run else None,
            }
        )
    else:
        headers = ["seller", "kind", "target", "field", "expected", "actual", "repair"]
        if report.differences:
            click.echo(table(headers, _difference_rows(report.differences)))
        click.echo(
            f"{len(report.sellers)} seller(s) compared, {len(report.differences)} difference(s)"
            + (" (dry run: nothing changed)" if dry_run else "")
        )
        if not dry_run and report.repairs:
            assert applied is not None
            click.echo(
                f"{len(report.repairs)} repair(s) enqueued and applied: {applied.done} done, "
                f"{applied.retried} to retry, {applied.poisoned} poison"
            )
            if remaining:
                click.echo("Still different:")
                click.echo(table(headers, _difference_rows(remaining)))
            else:
                click.echo("Keycloak now matches the store.")
    left = report.differences if dry_run else remaining
    if left:
        sys.exit(1)


COMMANDS = [worker, outbox, keycloak, reconcile_command]
