"""The command line's contract (issue 8 #6 to #9, #11): public URL, migrations on first use
and by ``db upgrade``, SELLER as id or name, the JSON shapes, a clean tree after install.

Commands run in-process with click's CliRunner, with SELLER_CONNECTOR_HOME and
SELLER_CONNECTOR_DATABASE_URL pointing at a temporary folder (or a PostgreSQL database).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import create_engine

from connector.adapters.sql.database import alembic_config
from connector.bootstrap import bootstrap
from connector.entrypoints.cli import main
from connector.entrypoints.web import create_app
from tests.conftest import PATCH_SCHEMA, SCIM, SELLER_GROUP, SELLER_USER, make_settings, user_body

REPOSITORY = Path(__file__).resolve().parents[2]
Invoke = Callable[..., Result]


def make_invoke(database_url: str | None, home: Path, **env: str) -> Invoke:
    """Run the CLI with its configuration in the environment, as an operator's shell has it."""

    def invoke(*args: str, ok: bool = True) -> Result:
        environment = {"SELLER_CONNECTOR_HOME": str(home), **env}
        if database_url is not None:
            environment["SELLER_CONNECTOR_DATABASE_URL"] = database_url
        result = CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"{args}: {result.output}{result.stderr}"
        return result

    return invoke


def head_revisions(url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def current_revisions(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that has never been migrated: a new SQLite file, or a new PostgreSQL database."""
    if "postgres" not in request.node.name:
        return f"sqlite:///{tmp_path / 'fresh' / 'store.sqlite3'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"e_{uuid.uuid4().hex[:12]}")


# -- 7. Database schema --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_first_command_brings_the_database_to_the_latest_migration(
    empty_database: str, tmp_path: Path, kind: str
) -> None:
    invoke = make_invoke(empty_database, tmp_path / "home")
    result = invoke("sellers", "list", "--format", "json")
    assert json.loads(result.stdout) == []
    assert current_revisions(empty_database) == head_revisions(empty_database)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_db_upgrade_migrates_explicitly_and_twice_is_harmless(
    empty_database: str, tmp_path: Path, kind: str
) -> None:
    invoke = make_invoke(empty_database, tmp_path / "home")
    assert "latest migration" in invoke("db", "upgrade").stdout
    assert current_revisions(empty_database) == head_revisions(empty_database)
    invoke("db", "upgrade")
    assert current_revisions(empty_database) == head_revisions(empty_database)


def test_the_default_store_is_a_sqlite_file_in_the_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    invoke = make_invoke(None, home)
    invoke(
        "sellers",
        "create",
        "Homely",
        "--plan",
        "professional",
        "--primary-email",
        "o@homely.example.com",
        "--primary-name",
        "O H",
    )
    assert (home / "seller-connector.sqlite3").is_file()
    assert "Homely" in invoke("sellers", "list").stdout


# -- 6. Public URL ----------------------------------------------------------------------------


def test_scim_url_and_meta_location_share_the_public_url(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    public = "https://scim.market.example/seller-connector"
    invoke = make_invoke(database_url, tmp_path / "home", SELLER_CONNECTOR_PUBLIC_URL=public + "/")
    created = json.loads(
        invoke(
            "sellers",
            "create",
            "Acme Tools",
            "--plan",
            "professional",
            "--primary-email",
            "owner@acme.example.com",
            "--primary-name",
            "Ann Owner",
        ).stdout
    )
    assert set(created) == {"id", "scim_url", "token"}
    assert created["scim_url"] == f"{public}/scim/v2"
    issued = json.loads(invoke("sellers", "token", "Acme Tools", "--label", "okta").stdout)
    assert issued["scim_url"] == f"{public}/scim/v2" and issued["seller"] == created["id"]

    # The service built from the same environment answers at that URL, with either token.
    connector = bootstrap(
        make_settings(database_url, tmp_path / "home", public_url=public), migrate=False
    )
    client = create_app(connector).test_client()
    for token in (created["token"], issued["token"]):
        response = client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        [primary] = response.get_json()["Resources"]
        assert primary["userName"] == "owner@acme.example.com"
        assert primary["meta"]["location"] == f"{created['scim_url']}/Users/{primary['id']}"


def test_the_public_url_defaults_to_loopback_8080(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SELLER_CONNECTOR_PUBLIC_URL", raising=False)
    invoke = make_invoke(f"sqlite:///{tmp_path / 's.sqlite3'}", tmp_path / "home")
    created = json.loads(
        invoke(
            "sellers",
            "create",
            "Plain",
            "--plan",
            "individual",
            "--primary-email",
            "o@plain.example.com",
            "--primary-name",
            "P O",
        ).stdout
    )
    assert created["scim_url"] == "http://127.0.0.1:8080/scim/v2"


# -- 8. SELLER as id or unique name, and 9. JSON shapes ---------------------------------------


@pytest.fixture
def populated(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """A seller built as in real life: created by the CLI, staffed through SCIM."""
    invoke = make_invoke(
        database_url, tmp_path / "home", SELLER_CONNECTOR_PUBLIC_URL="http://scim.test"
    )
    created = json.loads(
        invoke(
            "sellers",
            "create",
            "Acme Tools",
            "--plan",
            "professional",
            "--primary-email",
            "owner@acme.example.com",
            "--primary-name",
            "Ann Owner",
        ).stdout
    )
    connector = bootstrap(make_settings(database_url, tmp_path / "home"), migrate=False)
    client = create_app(connector).test_client()
    headers = {"Authorization": f"Bearer {created['token']}", "Content-Type": SCIM}

    def user(name: str, **extension: Any) -> str:
        body = user_body(name)
        body["schemas"].append(SELLER_USER)
        body[SELLER_USER] = extension
        response = client.post("/scim/v2/Users", json=body, headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)
        return str(response.get_json()["id"])

    picker = user(
        "picker@acme.example.com",
        permissions=[{"category": "inventory", "level": "view"}],
        notifications=["orders"],
    )
    lead = user("lead@acme.example.com", notifications=["orders", "deals"])
    gone = user("gone@acme.example.com", notifications=["orders"])
    response = client.post(
        "/scim/v2/Groups",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", SELLER_GROUP],
            "displayName": "Leads",
            "members": [{"value": lead}, {"value": picker}],
            SELLER_GROUP: {
                "permissions": [
                    {"category": "user-permissions", "level": "admin"},
                    {"category": "inventory", "level": "edit"},
                ]
            },
        },
        headers=headers,
    )
    assert response.status_code == 201
    response = client.patch(
        f"/scim/v2/Users/{gone}",
        json={
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
        headers=headers,
    )
    assert response.status_code == 200
    return {"invoke": invoke, "seller": created, "picker": picker, "lead": lead, "gone": gone}


LISTINGS = [
    ("access-review", "{seller}"),
    ("audit", "{seller}"),
    ("notifications", "recipients", "{seller}", "orders"),
    ("users", "list", "{seller}"),
    ("sellers", "tokens", "{seller}"),
]


@pytest.mark.parametrize("command", LISTINGS, ids=[" ".join(c[:2]) for c in LISTINGS])
def test_seller_arguments_accept_the_id_or_the_unique_name(
    populated: dict[str, Any], command: tuple[str, ...]
) -> None:
    invoke = populated["invoke"]
    seller_id = populated["seller"]["id"]
    outputs = []
    for ref in (seller_id, "Acme Tools", "acme tools"):
        args = [part.format(seller=ref) for part in command]
        outputs.append(invoke(*args, "--format", "json").stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    refused = invoke(*[part.format(seller="Nobody Inc") for part in command], ok=False)
    assert refused.exit_code != 0
    assert "Nobody Inc" in refused.output + refused.stderr
    duplicate = invoke(
        "sellers",
        "create",
        "ACME TOOLS",
        "--plan",
        "professional",
        "--primary-email",
        "x@dup.example.com",
        "--primary-name",
        "D U",
        ok=False,
    )
    assert duplicate.exit_code != 0


def test_access_review_json_shape(populated: dict[str, Any]) -> None:
    data = json.loads(populated["invoke"]("access-review", "Acme Tools", "--format", "json").stdout)
    assert set(data) == {"seller", "users"}
    assert data["seller"] == {
        "id": populated["seller"]["id"],
        "name": "Acme Tools",
        "plan": "professional",
    }
    keys = {
        "id",
        "userName",
        "emails",
        "role",
        "active",
        "administrator",
        "stale",
        "effective_permissions",
    }
    for line in data["users"]:
        assert set(line) == keys
        assert isinstance(line["emails"], list) and all(isinstance(e, str) for e in line["emails"])
        assert line["role"] in ("primary", "secondary")
        assert all(isinstance(line[k], bool) for k in ("active", "administrator", "stale"))
        for grant in line["effective_permissions"]:
            assert set(grant) == {"category", "level", "granted_by"}
            assert grant["level"] in ("view", "edit", "admin")
            assert grant["granted_by"] and all(
                re.fullmatch(r"direct|group:.+", g) for g in grant["granted_by"]
            )
    users = {u["userName"]: u for u in data["users"]}
    assert (
        users["owner@acme.example.com"]["role"] == "primary"
        and users["owner@acme.example.com"]["administrator"]
    )
    lead = users["lead@acme.example.com"]
    assert lead["administrator"] is True and lead["stale"] is False
    assert {
        g["category"]: (g["level"], g["granted_by"]) for g in lead["effective_permissions"]
    } == {
        "inventory": ("edit", ["group:Leads"]),
        "user-permissions": ("admin", ["group:Leads"]),
    }
    assert users["gone@acme.example.com"]["active"] is False
    assert users["gone@acme.example.com"]["administrator"] is False


def test_notification_recipients_json_shape_and_routing(populated: dict[str, Any]) -> None:
    invoke = populated["invoke"]
    data = json.loads(
        invoke("notifications", "recipients", "Acme Tools", "orders", "--format", "json").stdout
    )
    assert set(data) == {"category", "recipients"} and data["category"] == "orders"
    for recipient in data["recipients"]:
        assert set(recipient) == {"id", "email", "role"}
    # The primary always; active subscribers a copy; the deactivated subscriber no longer.
    assert [(r["email"], r["role"]) for r in data["recipients"]] == [
        ("owner@acme.example.com", "primary"),
        ("lead@acme.example.com", "secondary"),
        ("picker@acme.example.com", "secondary"),
    ]
    deals = json.loads(
        invoke("notifications", "recipients", "Acme Tools", "deals", "--format", "json").stdout
    )
    assert [r["email"] for r in deals["recipients"]] == [
        "owner@acme.example.com",
        "lead@acme.example.com",
    ]
    refused = invoke("notifications", "recipients", "Acme Tools", "weather", ok=False)
    assert refused.exit_code != 0 and "weather" in refused.output + refused.stderr


def test_audit_json_shape(populated: dict[str, Any]) -> None:
    events = json.loads(populated["invoke"]("audit", "Acme Tools", "--format", "json").stdout)
    assert isinstance(events, list) and events
    for event in events:
        assert set(event) == {"at", "actor", "action", "target", "changes"}
        at = dt.datetime.fromisoformat(event["at"])
        assert "T" in event["at"] and at.utcoffset() == dt.timedelta(0)
        assert isinstance(event["changes"], dict)
    assert [e["action"] for e in events][:2] == ["seller.created", "token.issued"]
    assert events[0]["actor"].startswith("cli:")
    token_events = [e for e in events if e["actor"].startswith("token:")]
    assert {e["action"] for e in token_events} >= {
        "user.created",
        "group.created",
        "user.deactivated",
    }
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_tables_are_the_default_for_people(populated: dict[str, Any]) -> None:
    invoke = populated["invoke"]
    for args in (
        ("access-review", "Acme Tools"),
        ("notifications", "recipients", "Acme Tools", "orders"),
        ("audit", "Acme Tools"),
    ):
        out = invoke(*args).stdout
        with pytest.raises(json.JSONDecodeError):
            json.loads(out)
        header, rule = out.splitlines()[:2]
        assert header.split()[0] in ("userName", "id", "at") and set(rule.replace(" ", "")) == {"-"}


# -- 11. pip install -e . leaves the tree clean -----------------------------------------------


@pytest.mark.slow
def test_editable_install_and_first_run_leave_the_tree_clean(tmp_path: Path) -> None:
    """Build artefacts (*.egg-info, build/), caches (__pycache__) and the default home (var/)
    are git-ignored: a copy of the committed tree stays clean after install and a first run."""
    tree = tmp_path / "tree"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], check=True)

    # A throwaway venv: pip would otherwise replace the shared venv's install of this project.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "-e",
            str(tree),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    assert list(tree.glob("*.egg-info")), (
        "setuptools wrote no egg-info: the check would prove nothing"
    )

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SELLER_CONNECTOR_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPATH"] = str(tree)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import connector, sys; from connector.entrypoints.cli import main; "
            "print(connector.__file__, file=sys.stderr); main()",
            "sellers",
            "list",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith(str(tree)), run.stderr  # the copy ran, not the shared install
    assert (tree / "var" / "seller-connector.sqlite3").is_file()
    assert list(tree.rglob("__pycache__"))

    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""
    shutil.rmtree(tree, ignore_errors=True)
