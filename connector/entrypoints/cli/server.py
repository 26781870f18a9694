"""seller-connector serve / db upgrade / demo: running the service."""

from __future__ import annotations

import multiprocessing
from typing import Any

import click

from connector.bootstrap import upgrade_database
from connector.domain.model import Plan
from connector.entrypoints.cli.context import CliContext, pass_context, public_scim_url
from connector.entrypoints.cli.output import emit_json
from connector.entrypoints.worker import gunicorn_hooks
from connector.services import sellers as seller_cases
from connector.settings import Settings


@click.group()
def db() -> None:
    """The connector's database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database (SELLER_CONNECTOR_DATABASE_URL) to the latest migration."""
    settings = Settings.from_env()
    upgrade_database(settings)
    click.echo("Database is at the latest migration.")


class _Gunicorn:
    """gunicorn run from code, so that `serve` needs no separate config file."""

    @staticmethod
    def run(options: dict[str, Any]) -> None:
        from gunicorn.app.base import BaseApplication

        class Application(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                from connector.entrypoints.web import create_app

                return create_app()

        Application().run()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    default=multiprocessing.cpu_count() + 1,
    show_default=True,
    type=int,
    help="gunicorn worker processes (one per core and one more: bench/server_model.py).",
)
@click.option(
    "--threads", default=4, show_default=True, type=int, help="Threads per worker (gthread)."
)
@click.option(
    "--worker-class",
    type=click.Choice(["gthread", "sync"]),
    default="gthread",
    show_default=True,
    help="gunicorn worker class: gthread keeps connections alive; sync serves one at a time.",
)
@pass_context
def serve(
    ctx: CliContext, host: str, port: int, workers: int, threads: int, worker_class: str
) -> None:
    """Serve SCIM at /scim/v2 with gunicorn (migrating the database first).

    When Keycloak is configured (SELLER_CONNECTOR_KEYCLOAK_URL...), one outbox worker runs
    beside the request workers and applies changes to Keycloak.
    """
    ctx.connector  # noqa: B018 - bootstrap now: migrate and check mappings before forking
    click.echo(
        f"seller-connector: SCIM at {ctx.connector.settings.public_url}/scim/v2, listening on {host}:{port}"
    )
    _Gunicorn.run(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": worker_class,
            "timeout": 60,
            "graceful_timeout": 20,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "limit_request_line": 8190,
            # One outbox worker process beside the request workers, when Keycloak is set.
            **gunicorn_hooks(ctx.connector),
        }
    )


@click.command("demo")
@click.option("--name", default="Demo Seller", show_default=True, help="The demo seller's name.")
@pass_context
def demo(ctx: CliContext, name: str) -> None:
    """Create (once) a demo seller on the professional plan and print its SCIM URL and a new token."""
    with ctx.uow() as uow:
        seller = uow.sellers.get_by_name(name)
        if seller is None:
            seller, _ = seller_cases.create_seller(
                uow,
                ctx.connector.catalogue,
                name,
                Plan.professional,
                "owner@demo-seller.example.com",
                "Dana Owner",
                ctx.actor,
            )
        _, token = seller_cases.issue_token(uow, seller, "demo", ctx.actor)
        uow.commit()
    emit_json({"id": seller.id, "scim_url": public_scim_url(ctx, seller), "token": token})
