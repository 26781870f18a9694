"""Helpers for the HTTP tests: SCIM bodies, error checks, a dump of the whole store, the CLI.

The fixtures of tests/conftest.py (``client``, ``make_seller``, ``connector``,
``database_url``) run each test on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import MetaData, select

from connector.bootstrap import Connector
from connector.entrypoints.cli import main
from tests.conftest import BULK_SCHEMA, PATCH_SCHEMA, SCIM

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    """A PatchOp body with these operations."""
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def bulk_body(*operations: dict[str, Any], fail_on_errors: int | None = None) -> dict[str, Any]:
    """A BulkRequest body with these operations."""
    body: dict[str, Any] = {"schemas": [BULK_SCHEMA], "Operations": list(operations)}
    if fail_on_errors is not None:
        body["failOnErrors"] = fail_on_errors
    return body


def group_body(display_name: str, members: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A SCIM Group body."""
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": display_name,
    }
    if members is not None:
        body["members"] = [{"value": m} for m in members]
    body.update(extra)
    return body


def assert_scim_error(
    response: Any, status: int, scim_type: str | None = None, *, detail_has: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check a SCIM error response (RFC 7644 §3.12) and return its body.

    The status is in the HTTP status line and, as a string, in the body; the body is
    application/scim+json; ``scimType`` is the expected one (or absent); the detail is
    a sentence for a person, never a traceback.
    """
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith(SCIM)
    body = response.get_json()
    assert body["schemas"] == [ERROR_SCHEMA]
    assert str(body["status"]) == str(status)
    assert body.get("scimType") == scim_type
    detail = body.get("detail") or ""
    assert detail.strip(), "a SCIM error needs a detail a person can act on"
    assert "Traceback" not in detail and 'File "' not in detail
    for fragment in detail_has:
        assert fragment.lower() in detail.lower(), f"{fragment!r} not in {detail!r}"
    return body


def store_dump(connector: Connector) -> dict[str, list[str]]:
    """Every row of every table of the store, as sorted JSON strings: compare two dumps to
    prove that nothing stored changed (whatever seller, whatever table)."""
    metadata = MetaData()
    metadata.reflect(connector.engine)
    dump: dict[str, list[str]] = {}
    with connector.engine.connect() as connection:
        for name, table in sorted(metadata.tables.items()):
            # The brake's count of failed authentications is a security log, not data.
            if name in ("alembic_version", "auth_failures"):
                continue
            rows = connection.execute(select(table)).mappings()
            dump[name] = sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)
    return dump


@pytest.fixture
def run_cli(database_url: str, tmp_path: Path) -> Callable[..., Result]:
    """Run the seller-connector CLI on the test's database, as an operator would."""

    def run(*args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(
            main,
            list(args),
            env={
                "SELLER_CONNECTOR_DATABASE_URL": database_url,
                "SELLER_CONNECTOR_HOME": str(tmp_path / "cli-home"),
                "SELLER_CONNECTOR_PUBLIC_URL": "http://scim.test",
            },
            catch_exceptions=False,
        )
        if ok:
            assert result.exit_code == 0, result.output + (result.stderr or "")
        return result

    return run


def review(run_cli: Callable[..., Result], seller_id: str) -> dict[str, dict[str, Any]]:
    """The access review of a seller, as JSON, by user id."""
    data = json.loads(run_cli("access-review", seller_id, "--format", "json").stdout)
    return {u["id"]: u for u in data["users"]}


def audit(run_cli: Callable[..., Result], seller_id: str) -> list[dict[str, Any]]:
    """The audit trail of a seller, as JSON."""
    return json.loads(run_cli("audit", seller_id, "--format", "json").stdout)
