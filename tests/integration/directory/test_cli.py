"""`seller-connector directory check | sync | watch` against a real slapd and the SQL store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connector.bootstrap import Connector
from connector.domain.model import Plan
from tests.conftest import SellerHandle
from tests.integration.directory.directory_helpers import (
    PASSWORD_ENV,
    cli,
    config_for,
    store_dump,
    write_config,
)
from tests.integration.ldap.ldap_helpers import dn, gdn
from tests.support.slapd import Slapd, free_port, member_change, replace_attr

pytestmark = pytest.mark.ldap

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def seller(make_seller: Callable[..., SellerHandle]) -> SellerHandle:
    return make_seller("Acme Outdoor")


@pytest.fixture
def source(corp: Slapd, seller: SellerHandle, tmp_path: Path) -> Path:
    """The corp source's YAML file (the password is only in the environment)."""
    return write_config(tmp_path / "corp.yaml", config_for(corp, seller.seller.id))


@pytest.fixture
def run(connector: Connector, corp: Slapd, tmp_path: Path) -> Callable[..., Any]:
    """Run the CLI with the sync account's password in its variable."""

    def invoke(*args: str, password: str | None = None) -> Any:
        return cli(
            connector,
            tmp_path / "home",
            *args,
            env={PASSWORD_ENV: corp.sync_password if password is None else password},
        )

    return invoke


def test_help_on_every_command(run: Callable[..., Any]) -> None:
    for args in (
        ("directory", "--help"),
        ("directory", "sync", "--help"),
        ("directory", "watch", "--help"),
        ("directory", "check", "--help"),
    ):
        result = run(*args)
        assert result.exit_code == 0 and "Usage:" in result.stdout, args
    sync_help = run("directory", "sync", "--help").stdout
    assert "--dry-run" in sync_help and "--force" in sync_help and "Exit codes" in sync_help


def test_sync_prints_progress_and_a_table(
    run: Callable[..., Any], source: Path, corp: Slapd
) -> None:
    result = run("directory", "sync", str(source), "--progress-every", "2")
    assert result.exit_code == 0, result.output
    assert "no stored sync state: full run" in result.stderr
    assert "read 2 directory entries" in result.stderr and "applied 7/7 changes" in result.stderr
    out = result.stdout
    assert "full run, applied" in out
    assert _row(out, "creates") == ["7", "7", "0"]
    assert "create  alice@example.com  sets: Catalog editors" in out
    assert dn("nomail") in out and "skipped: no mail" in out
    assert "Done: the next run is a delta from here." in out

    corp.modify(replace_attr(dn("alice"), "mail", "alice.smith@example.com"))
    corp.modify(member_change(gdn("orders"), "add", dn("bob")))
    result = run("directory", "sync", str(source), "--format", "json", "--quiet")
    assert result.exit_code == 0 and result.stderr == ""
    report = json.loads(result.stdout)
    assert report["run"] == "delta" and report["ok"] and report["marker_stored"]
    assert report["counts"]["updates"] == {"planned": 1, "applied": 1, "refused": 0}
    assert report["counts"]["permission_changes"]["applied"] == 1
    [update] = [c for c in report["changes"] if c["kind"] == "update"]
    assert update["changes"] == [
        {"field": "email", "from": "alice@example.com", "to": "alice.smith@example.com"}
    ]


def _row(table: str, label: str) -> list[str]:
    for line in table.splitlines():
        if line.startswith(label + " "):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in\n{table}")


def test_dry_run_shows_the_plan_and_changes_nothing(
    run: Callable[..., Any], source: Path, connector: Connector
) -> None:
    before = store_dump(connector)
    result = run("directory", "sync", str(source), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run, nothing changed" in result.stdout
    assert "Changes (planned):" in result.stdout and "create  gina@example.com" in result.stdout
    assert result.stdout.rstrip().endswith("Dry run: nothing was changed.")
    assert store_dump(connector) == before


def test_threshold_stops_the_run_unless_forced(
    run: Callable[..., Any], corp: Slapd, seller: SellerHandle, tmp_path: Path, connector: Connector
) -> None:
    strict = write_config(
        tmp_path / "strict.yaml", config_for(corp, seller.seller.id, deactivation_threshold=0.1)
    )
    assert run("directory", "sync", str(strict)).exit_code == 0
    corp.delete(dn("alice"), dn("bob"))
    before = store_dump(connector)

    result = run("directory", "sync", str(strict), "--full")
    assert result.exit_code == 4
    assert "deactivate 2 of 7" in result.stderr and "(29%)" in result.stderr
    assert "--force" in result.stderr and "Nothing was changed" in result.stderr
    assert store_dump(connector) == before

    dry = run("directory", "sync", str(strict), "--full", "--dry-run")
    assert dry.exit_code == 4 and "a real run would stop here" in dry.stderr
    assert store_dump(connector) == before

    forced = run("directory", "sync", str(strict), "--full", "--force", "--format", "json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["counts"]["deactivations"]["applied"] == 2


def test_bad_credentials(run: Callable[..., Any], source: Path, connector: Connector) -> None:
    before = store_dump(connector)
    result = run("directory", "sync", str(source), password="not-the-password")
    assert result.exit_code == 3
    assert "invalid credentials" in result.stderr and PASSWORD_ENV in result.stderr
    assert "Nothing was changed" in result.stderr
    assert "not-the-password" not in result.output
    as_json = run("directory", "sync", str(source), "--format", "json", password="nope-nope")
    assert as_json.exit_code == 3
    body = json.loads(as_json.stdout)
    assert body["ok"] is False and body["exit_code"] == 3 and "invalid credentials" in body["error"]
    assert store_dump(connector) == before


def test_unreachable_server(
    run: Callable[..., Any], corp: Slapd, seller: SellerHandle, tmp_path: Path
) -> None:
    config = config_for(corp, seller.seller.id, url=f"ldap://127.0.0.1:{free_port()}")
    result = run("directory", "sync", str(write_config(tmp_path / "down.yaml", config)))
    assert result.exit_code == 3
    assert "cannot reach the directory server" in result.stderr and "host and port" in result.stderr


def test_missing_password_and_bad_file(
    connector: Connector, source: Path, tmp_path: Path, corp: Slapd
) -> None:
    result = cli(connector, tmp_path / "home", "directory", "sync", str(source))
    assert result.exit_code == 2 and PASSWORD_ENV in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(source.read_text() + "bind_password: hunter2\n")
    result = cli(connector, tmp_path / "home", "directory", "sync", str(bad))
    assert result.exit_code == 2
    assert "must not be written in the file" in result.stderr and "hunter2" not in result.output


def test_unknown_seller(run: Callable[..., Any], corp: Slapd, tmp_path: Path) -> None:
    config = config_for(corp, "no-such-seller")
    result = run("directory", "sync", str(write_config(tmp_path / "x.yaml", config)))
    assert result.exit_code == 2 and "no-such-seller" in result.stderr


def test_refused_changes_are_grouped_and_exit_1(
    run: Callable[..., Any], corp: Slapd, make_seller: Callable[..., SellerHandle], tmp_path: Path
) -> None:
    solo = make_seller("Solo Seller", plan=Plan.individual)
    source = write_config(tmp_path / "solo.yaml", config_for(corp, solo.seller.id))
    result = run("directory", "sync", str(source))
    assert result.exit_code == 1
    assert "Refused by the seller rules" in result.stdout
    [line] = [ln for ln in result.stdout.splitlines() if "professional plan" in ln]
    assert line.split()[0] == "7"  # one line for the 7 refusals
    assert "sync state was not advanced" in result.stdout


def test_check(
    run: Callable[..., Any],
    source: Path,
    corp: Slapd,
    seller: SellerHandle,
    tmp_path: Path,
) -> None:
    result = run("directory", "check", str(source))
    assert result.exit_code == 0, result.output
    for name in ("password", "bind", "base_dn", "groups", "users", "seller", "permission sets"):
        assert _check_result(result.stdout, name) == "ok", (name, result.stdout)
    assert "8 entries match" in result.stdout and "never synced" in result.stdout

    wrong = run("directory", "check", str(source), "--format", "json", password="wrong")
    assert wrong.exit_code == 1
    checks = {c["check"]: c for c in json.loads(wrong.stdout)["checks"]}
    assert checks["bind"]["ok"] is False and "invalid credentials" in checks["bind"]["detail"]

    from tests.integration.ldap.ldap_helpers import GROUP_MAP

    odd = config_for(
        corp,
        seller.seller.id,
        groups={
            "base_dn": "ou=groups,dc=example,dc=com",
            "map": {**GROUP_MAP, gdn("finance"): "Payroll"},
        },
    )
    missing = run("directory", "check", str(write_config(tmp_path / "odd.yaml", odd)))
    assert missing.exit_code == 1
    assert _check_result(missing.stdout, "permission sets") == "FAIL"
    assert "Payroll" in missing.stdout


def _check_result(table: str, name: str) -> str:
    for line in table.splitlines():
        if line.startswith(name + "  "):
            return line[len(name) :].split()[0]
    raise AssertionError(f"no check {name!r} in\n{table}")


def test_watch_runs_deltas_and_full_runs_when_due(
    run: Callable[..., Any], corp: Slapd, seller: SellerHandle, tmp_path: Path
) -> None:
    config = config_for(corp, seller.seller.id, full_reconcile_every={"runs": 2})
    source = write_config(tmp_path / "watch.yaml", config)
    started = time.monotonic()
    result = run("directory", "watch", str(source), "--interval", "1", "--max-runs", "3")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 2  # on schedule: runs start 1 s apart
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["event"] == "watch-started"
    runs = [ln for ln in lines if ln["event"] == "sync"]
    assert [r["kind"] for r in runs] == ["full", "delta", "full"]
    assert [r["status"] for r in runs] == ["ok"] * 3
    assert runs[0]["creates"] == 7 and runs[0]["applied"] == 7 and runs[0]["problems"] == 1
    assert all(isinstance(r["duration_s"], float) for r in runs)
    assert lines[-1] == {**lines[-1], "event": "watch-stopped", "runs": 3, "reason": "max-runs"}


def test_watch_logs_errors_and_goes_on(
    run: Callable[..., Any], corp: Slapd, seller: SellerHandle, tmp_path: Path
) -> None:
    config = config_for(corp, seller.seller.id, url=f"ldap://127.0.0.1:{free_port()}")
    source = write_config(tmp_path / "down.yaml", config)
    result = run("directory", "watch", str(source), "--interval", "1", "--max-runs", "2")
    assert result.exit_code == 1  # the last run failed
    runs = [json.loads(ln) for ln in result.stdout.splitlines() if '"sync"' in ln]
    assert [r["status"] for r in runs] == ["directory-error"] * 2
    assert "cannot reach" in runs[0]["error"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_watch_stops_cleanly_on_a_signal(
    connector: Connector, corp: Slapd, source: Path, tmp_path: Path, signum: int
) -> None:
    env = {
        **os.environ,
        "SELLER_CONNECTOR_DATABASE_URL": connector.settings.database_url,
        "SELLER_CONNECTOR_HOME": str(tmp_path / "home"),
        PASSWORD_ENV: corp.sync_password,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from connector.entrypoints.cli import main; main()",
            "directory",
            "watch",
            str(source),
            "--interval",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(json.loads(line))
            if lines[-1]["event"] == "sync":
                break
        assert lines and lines[-1]["event"] == "sync" and lines[-1]["status"] == "ok"
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    stopped = json.loads(out.splitlines()[-1])
    assert stopped["event"] == "watch-stopped"
    assert stopped["reason"] == signal.Signals(signum).name and stopped["runs"] == 1


def test_watch_survives_an_unexpected_error(
    run: Callable[..., Any], source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connector.entrypoints.cli.directory as module

    real, calls = module.run_sync, {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is restarting")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "run_sync", flaky)
    result = run("directory", "watch", str(source), "--interval", "1", "--max-runs", "2")
    assert result.exit_code == 0, result.output
    runs = [json.loads(ln) for ln in result.stdout.splitlines() if '"sync"' in ln]
    assert (
        runs[0]["status"] == "error" and "RuntimeError: database is restarting" in runs[0]["error"]
    )
    assert runs[1]["status"] == "ok" and runs[1]["creates"] == 7
