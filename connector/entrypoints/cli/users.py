"""seller-connector users ...: a seller's users, seen and handled by an operator."""

from __future__ import annotations

import click

from connector.domain.errors import NotFound
from connector.domain.model import SellerAccount, SellerUser, utcnow
from connector.entrypoints.cli.context import CliContext, pass_context
from connector.entrypoints.cli.output import emit, emit_json, format_option
from connector.ports.store import UnitOfWork
from connector.services import users as cases


@click.group()
def users() -> None:
    """A seller's primary and secondary users."""


@users.command("list")
@click.argument("seller")
@click.option("--include-deleted", is_flag=True, help="Also show users deleted through SCIM.")
@format_option
@pass_context
def list_users(ctx: CliContext, seller: str, include_deleted: bool, output_format: str) -> None:
    """List SELLER's users (id or name) with role, status and invitation."""
    now = utcnow()
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        found = uow.users.list(account.id, include_deleted=include_deleted)
    rows = []
    data = []
    for user in found:
        status = "deleted" if user.deleted else ("active" if user.active else "inactive")
        invitation = user.invitation.current_state(now).value if user.invitation else ""
        rows.append([user.id, user.user_name, user.role.value, status, invitation])
        data.append(
            {
                "id": user.id,
                "userName": user.user_name,
                "role": user.role.value,
                "status": status,
                "invitation": invitation or None,
                "emails": [e.value for e in user.emails],
            }
        )
    emit(output_format, ["id", "userName", "role", "status", "invitation"], rows, data)


def _find(
    ctx: CliContext, uow: UnitOfWork, seller: str, user: str
) -> tuple[SellerAccount, SellerUser]:
    account = ctx.seller(uow, seller)
    try:
        return account, cases.find_user(uow, account, user)
    except NotFound as error:
        raise click.ClickException(
            f"{account.name} has no user {user!r} (give its id or userName)."
        ) from error


@users.command("resend-invitation")
@click.argument("seller")
@click.argument("user")
@click.option(
    "--days",
    type=click.IntRange(1, 30),
    default=None,
    help="Lifespan of the new link (default: configured, 7).",
)
@pass_context
def resend_invitation(ctx: CliContext, seller: str, user: str, days: int | None) -> None:
    """Send USER (id or userName) of SELLER a new invitation, e.g. after the last one expired."""
    import datetime as dt

    lifespan = dt.timedelta(days=days) if days else ctx.connector.settings.invitation_lifespan
    with ctx.uow() as uow:
        account, found = _find(ctx, uow, seller, user)
        updated = cases.resend_invitation(uow, account, found.id, ctx.actor, lifespan=lifespan)
        uow.commit()
    assert updated.invitation is not None
    emit_json(
        {
            "id": updated.id,
            "invitation": "pending",
            "expires": updated.invitation.expires_at.isoformat()
            if updated.invitation.expires_at
            else None,
        }
    )


@users.command("deactivate")
@click.argument("seller")
@click.argument("user")
@pass_context
def deactivate(ctx: CliContext, seller: str, user: str) -> None:
    """Deactivate USER of SELLER (never deleted; its sessions end in the identity provider)."""
    with ctx.uow() as uow:
        account, found = _find(ctx, uow, seller, user)
        cases.set_active(uow, account, found.id, False, ctx.actor)
        uow.commit()
    click.echo(f"{found.user_name} deactivated.")


@users.command("reactivate")
@click.argument("seller")
@click.argument("user")
@pass_context
def reactivate(ctx: CliContext, seller: str, user: str) -> None:
    """Reactivate USER of SELLER."""
    with ctx.uow() as uow:
        account, found = _find(ctx, uow, seller, user)
        cases.set_active(uow, account, found.id, True, ctx.actor)
        uow.commit()
    click.echo(f"{found.user_name} reactivated.")
