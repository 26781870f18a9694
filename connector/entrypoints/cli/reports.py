"""seller-connector notifications / access-review / audit: what people review."""

from __future__ import annotations

import click

from connector.entrypoints.cli.context import CliContext, pass_context
from connector.entrypoints.cli.output import emit, format_option
from connector.services import queries


@click.group()
def notifications() -> None:
    """Who receives which notification category."""


@notifications.command("recipients")
@click.argument("seller")
@click.argument("category")
@format_option
@pass_context
def recipients(ctx: CliContext, seller: str, category: str, output_format: str) -> None:
    """Print who receives CATEGORY for SELLER: the primary always, active subscribers a copy."""
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        found = queries.notification_recipients(uow, ctx.connector.catalogue, account, category)
    rows = [[r.user_id, r.email, r.role] for r in found]
    data = {
        "category": category,
        "recipients": [{"id": r.user_id, "email": r.email, "role": r.role} for r in found],
    }
    emit(output_format, ["id", "email", "role"], rows, data)


@click.command("access-review")
@click.argument("seller")
@format_option
@pass_context
def access_review(ctx: CliContext, seller: str, output_format: str) -> None:
    """Every user of SELLER with role, status, effective permissions and who granted them.

    Administrators are flagged; so are users with no change or login for 90 days.
    """
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        lines = queries.access_review(uow, ctx.connector.catalogue, account)
    rows = []
    users = []
    for line in lines:
        user = line.user
        permissions = ", ".join(
            f"{g.category}:{g.level.value} ({'+'.join(g.granted_by)})" for g in line.grants
        )
        rows.append(
            [
                user.user_name,
                user.role.value,
                "active" if user.active else "inactive",
                "yes" if line.administrator else "",
                "yes" if line.stale else "",
                permissions,
            ]
        )
        users.append(
            {
                "id": user.id,
                "userName": user.user_name,
                "emails": [e.value for e in user.emails],
                "role": user.role.value,
                "active": user.active,
                "administrator": line.administrator,
                "stale": line.stale,
                "effective_permissions": [
                    {
                        "category": g.category,
                        "level": g.level.value,
                        "granted_by": list(g.granted_by),
                    }
                    for g in line.grants
                ],
            }
        )
    data = {
        "seller": {"id": account.id, "name": account.name, "plan": account.plan.value},
        "users": users,
    }
    emit(
        output_format,
        ["userName", "role", "status", "admin", "stale", "effective permissions"],
        rows,
        data,
    )


@click.command("audit")
@click.argument("seller")
@click.option("--limit", type=int, default=None, help="Show at most this many events.")
@format_option
@pass_context
def audit(ctx: CliContext, seller: str, limit: int | None, output_format: str) -> None:
    """SELLER's audit trail: every change, who made it, when, through which token or command."""
    import json

    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        events = queries.audit_trail(uow, account, limit)
    rows = [
        [e.at.isoformat() if e.at else "", e.actor, e.action, e.target, json.dumps(e.changes)[:80]]
        for e in events
    ]
    data = [
        {
            "at": e.at.isoformat() if e.at else None,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "changes": e.changes,
        }
        for e in events
    ]
    emit(output_format, ["at", "actor", "action", "target", "changes"], rows, data)
