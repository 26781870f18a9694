"""seller-connector operators ... / events: operator credentials for the operator API, and the
feed of changes the marketplace's portal follows."""

from __future__ import annotations

import json

import click

from connector.entrypoints.cli.context import CliContext, pass_context
from connector.entrypoints.cli.output import emit, emit_json, format_option
from connector.services import feed as feed_cases
from connector.services import operators as cases


@click.group()
def operators() -> None:
    """Credentials of the marketplace's operators for the operator API (/operator/v1)."""


@operators.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice([s.value for s in cases.Scope]),
    required=True,
    help="read: look only; admin: also create sellers, change plans, issue tokens.",
)
@pass_context
def create(ctx: CliContext, name: str, scope: str) -> None:
    """Issue a credential for the operator NAME (shown once, stored hashed).

    Calls made with it are audited as operator:NAME.
    """
    with ctx.uow() as uow:
        operator, credential = cases.create_operator(uow, name, cases.Scope(scope), ctx.actor)
    emit_json(
        {
            "id": operator.id,
            "name": operator.name,
            "scope": operator.scope,
            "credential": credential,
        }
    )


@operators.command("list")
@format_option
@pass_context
def list_operators(ctx: CliContext, output_format: str) -> None:
    """List operator credentials (never their secrets)."""
    with ctx.uow() as uow:
        found = cases.list_operators(uow)
    rows = [
        [
            o.id,
            o.name,
            o.scope,
            o.created_at.isoformat(),
            o.revoked_at.isoformat() if o.revoked_at else "",
        ]
        for o in found
    ]
    data = [
        {
            "id": o.id,
            "name": o.name,
            "scope": o.scope,
            "created": o.created_at.isoformat(),
            "revoked": o.revoked_at.isoformat() if o.revoked_at else None,
        }
        for o in found
    ]
    emit(output_format, ["id", "name", "scope", "created", "revoked"], rows, data)


@operators.command("revoke")
@click.argument("operator")
@pass_context
def revoke(ctx: CliContext, operator: str) -> None:
    """Revoke OPERATOR's credential (id or name) at once."""
    with ctx.uow() as uow:
        revoked = cases.revoke_operator(uow, operator, ctx.actor)
    click.echo(f"Operator {revoked.name} ({revoked.id}) revoked.")


@operators.command("audit")
@click.option("--after", type=int, default=None, help="Only events after this event id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@format_option
@pass_context
def audit(ctx: CliContext, after: int | None, limit: int, output_format: str) -> None:
    """The operator audit: credentials issued and revoked, operator calls of no seller."""
    with ctx.uow() as uow:
        events = cases.operator_audit(uow, after, limit)
    rows = [
        [e.id, e.at.isoformat() if e.at else "", e.actor, e.action, e.target, json.dumps(e.changes)]
        for e in events
    ]
    data = [
        {
            "id": e.id,
            "at": e.at.isoformat() if e.at else None,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "changes": e.changes,
        }
        for e in events
    ]
    emit(output_format, ["id", "at", "actor", "action", "target", "changes"], rows, data)


@click.command("events")
@click.option("--after", default=None, help="The cursor of the last event you have.")
@click.option("--seller", default=None, help="Only this seller's changes (id or name).")
@click.option(
    "--limit", type=click.IntRange(1, feed_cases.MAX_PAGE), default=100, show_default=True
)
@pass_context
def events(ctx: CliContext, after: str | None, seller: str | None, limit: int) -> None:
    """The feed of user and permission changes, in order (JSON: events, next, more)."""
    connector = ctx.connector
    with ctx.uow() as uow:
        seller_id = ctx.seller(uow, seller).id if seller else None
        page = feed_cases.changes_after(connector.uow, after, limit, seller_id)
    emit_json({"events": page.events, "next": str(page.next), "more": page.more})
