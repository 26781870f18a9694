"""seller-connector sellers ...: seller accounts, their tokens and their primary user."""

from __future__ import annotations

import click

from connector.domain.model import Plan
from connector.entrypoints.cli.context import CliContext, pass_context, public_scim_url
from connector.entrypoints.cli.output import emit, emit_json, format_option
from connector.ports.mail import MailUnavailable
from connector.services import sellers as cases


@click.group()
def sellers() -> None:
    """Seller accounts (tenants): create them, issue and revoke their SCIM tokens."""


@sellers.command("create")
@click.argument("name")
@click.option(
    "--plan", type=click.Choice([p.value for p in Plan]), required=True, help="Selling plan."
)
@click.option(
    "--primary-email", required=True, help="The account's registration email: its primary user."
)
@click.option("--primary-name", required=True, help='The primary user\'s name, "First Last".')
@pass_context
def create(ctx: CliContext, name: str, plan: str, primary_email: str, primary_name: str) -> None:
    """Create a seller account with its primary user; print its SCIM URL and a token (shown once)."""
    with ctx.uow() as uow:
        seller, _ = cases.create_seller(
            uow, ctx.connector.catalogue, name, Plan(plan), primary_email, primary_name, ctx.actor
        )
        _, token = cases.issue_token(uow, seller, "initial", ctx.actor)
        uow.commit()
    emit_json({"id": seller.id, "scim_url": public_scim_url(ctx, seller), "token": token})


@sellers.command("list")
@format_option
@pass_context
def list_sellers(ctx: CliContext, output_format: str) -> None:
    """List seller accounts."""
    with ctx.uow() as uow:
        found = uow.sellers.list()
        counts = {s.id: len(uow.users.list(s.id)) for s in found}
    rows = [[s.id, s.name, s.plan.value, counts[s.id], s.created_at.isoformat()] for s in found]
    data = [
        {
            "id": s.id,
            "name": s.name,
            "plan": s.plan.value,
            "users": counts[s.id],
            "created": s.created_at.isoformat(),
        }
        for s in found
    ]
    emit(output_format, ["id", "name", "plan", "users", "created"], rows, data)


@sellers.command("token")
@click.argument("seller")
@click.option("--label", default="", help="What the token is for, e.g. okta or entra.")
@pass_context
def token(ctx: CliContext, seller: str, label: str) -> None:
    """Issue another SCIM bearer token for SELLER (id or name). Shown once, stored hashed."""
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        issued, plain = cases.issue_token(uow, account, label, ctx.actor)
        uow.commit()
    emit_json(
        {
            "id": issued.id,
            "seller": account.id,
            "scim_url": public_scim_url(ctx, account),
            "token": plain,
        }
    )


@sellers.command("tokens")
@click.argument("seller")
@format_option
@pass_context
def tokens(ctx: CliContext, seller: str, output_format: str) -> None:
    """List SELLER's tokens (never their secrets)."""
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        found = uow.tokens.list(account.id)
    rows = [
        [t.id, t.label, t.created_at.isoformat(), t.revoked_at.isoformat() if t.revoked_at else ""]
        for t in found
    ]
    data = [
        {
            "id": t.id,
            "label": t.label,
            "created": t.created_at.isoformat(),
            "revoked": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in found
    ]
    emit(output_format, ["id", "label", "created", "revoked"], rows, data)


@sellers.command("revoke-token")
@click.argument("seller")
@click.argument("token_id")
@pass_context
def revoke_token(ctx: CliContext, seller: str, token_id: str) -> None:
    """Revoke one of SELLER's tokens at once (see `sellers tokens` for ids)."""
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        cases.revoke_token(uow, account, token_id, ctx.actor)
        uow.commit()
    click.echo(f"Token {token_id} of {account.name} revoked.")


@sellers.command("partners")
@click.argument("seller")
@click.argument("domains", nargs=-1)
@pass_context
def partners(ctx: CliContext, seller: str, domains: tuple[str, ...]) -> None:
    """Set the email DOMAINS of SELLER's authorized partners (service providers are not users)."""
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        cases.set_partner_domains(uow, account, list(domains), ctx.actor)
        uow.commit()
    click.echo(f"{account.name}: partner domains {', '.join(account.partner_domains) or '(none)'}.")


@sellers.command("plan")
@click.argument("seller")
@click.argument("plan", type=click.Choice([p.value for p in Plan]))
@pass_context
def plan(ctx: CliContext, seller: str, plan: str) -> None:
    """Change SELLER's selling plan."""
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        cases.set_plan(uow, account, Plan(plan), ctx.actor)
        uow.commit()
    click.echo(f"{account.name} is on the {plan} plan.")


@sellers.command("change-primary")
@click.argument("seller")
@click.option("--to", "new_email", required=True, help="The new primary user's email address.")
@pass_context
def change_primary(ctx: CliContext, seller: str, new_email: str) -> None:
    """Start making NEW_EMAIL the primary user of SELLER: a verification link is emailed to it.

    The change completes only when the link is confirmed (its page shows the seller and the
    new primary, and asks to confirm). A secondary user must be deactivated first.
    """
    connector = ctx.connector
    with ctx.uow() as uow:
        account = ctx.seller(uow, seller)
        try:
            change_id = cases.request_primary_change(
                uow,
                connector.mailer(),
                account,
                new_email,
                ctx.actor,
                confirmation_url=f"{connector.settings.public_url}/operator/confirm-primary",
            )
        except MailUnavailable as error:
            raise click.ClickException(f"{error} Nothing was changed.") from error
    click.echo(
        f"Verification link sent to {new_email} (change {change_id}); it completes once confirmed."
    )


@sellers.command("confirm-primary")
@click.argument("token")
@pass_context
def confirm_primary(ctx: CliContext, token: str) -> None:
    """Complete a primary change with the TOKEN from its verification link."""
    with ctx.uow() as uow:
        user, _ = cases.confirm_primary_change(uow, ctx.connector.catalogue, token, ctx.actor)
    click.echo(f"{user.user_name} is now the primary user.")
