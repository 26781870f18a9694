"""Errors a person can act on: each names the server and what to check, never the password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.adapters.ldap.reader import DirectoryReader
from connector.ports.directory import (
    DirectoryAuthFailed,
    DirectoryBaseNotFound,
    DirectoryError,
    DirectoryTlsError,
    DirectoryUnreachable,
)
from tests.integration.ldap.ldap_helpers import make_config
from tests.support.slapd import GROUPS, Slapd, free_port, write_certificates

pytestmark = pytest.mark.ldap


def test_bad_credentials(slapd_shared: Slapd) -> None:
    config = make_config(slapd_shared)
    with pytest.raises(DirectoryAuthFailed) as info:
        DirectoryReader(config, password="wrong-password").connect()
    message = str(info.value)
    assert slapd_shared.url in message and slapd_shared.sync_dn in message
    assert "invalid credentials" in message
    assert "SELLER_CONNECTOR_TEST_LDAP_PASSWORD" in message  # where the password comes from
    assert "wrong-password" not in message


def test_password_from_the_environment(
    slapd_shared: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SELLER_CONNECTOR_TEST_LDAP_PASSWORD", slapd_shared.sync_password)
    with DirectoryReader(make_config(slapd_shared)) as reader:
        assert reader.current_marker() is not None


def test_unreachable_server() -> None:
    port = free_port()  # nobody listens there
    server = Slapd.__new__(Slapd)  # only for make_config's fields
    server.port, server.sync_dn = port, "cn=sync,ou=system,dc=example,dc=com"
    config = make_config(server)
    with pytest.raises(DirectoryUnreachable) as info:
        DirectoryReader(config, password="x").connect()
    message = str(info.value)
    assert f"ldap://127.0.0.1:{port}" in message and "host and port" in message


def test_bad_base_dn(slapd_shared: Slapd) -> None:
    config = make_config(
        slapd_shared,
        base_dn="ou=nobody,dc=example,dc=com",
        groups={"map": {}, "require_mapped_group": False},
    )
    with DirectoryReader(config, password=slapd_shared.sync_password) as reader:
        scan = reader.read_all()
        with pytest.raises(DirectoryBaseNotFound) as info:
            list(scan.users)
    message = str(info.value)
    assert "ou=nobody,dc=example,dc=com does not exist" in message and "base_dn" in message


def test_base_dn_outside_every_naming_context(slapd_shared: Slapd) -> None:
    config = make_config(slapd_shared, base_dn="dc=elsewhere,dc=org")
    with (
        DirectoryReader(config, password=slapd_shared.sync_password) as reader,
        pytest.raises(DirectoryBaseNotFound, match="none of the naming contexts"),
    ):
        reader.read_all()


def test_missing_mapped_group_stops_before_reading_users(slapd_shared: Slapd) -> None:
    config = make_config(
        slapd_shared, groups={"base_dn": GROUPS, "map": {f"cn=renamed,{GROUPS}": "Catalog editors"}}
    )
    with (
        DirectoryReader(config, password=slapd_shared.sync_password) as reader,
        pytest.raises(DirectoryBaseNotFound, match=r"cn=renamed,ou=groups.*fix groups.map"),
    ):
        reader.read_all()


def test_starttls_against_a_server_without_tls(slapd_shared: Slapd) -> None:
    config = make_config(slapd_shared, tls={"mode": "starttls"})
    with pytest.raises(DirectoryTlsError) as info:
        DirectoryReader(config, password=slapd_shared.sync_password).connect()
    assert slapd_shared.url in str(info.value) and "tls.ca_file" in str(info.value)


def test_ldaps_against_a_plain_port(slapd_shared: Slapd) -> None:
    url = slapd_shared.url.replace("ldap://", "ldaps://")
    config = make_config(slapd_shared, url=url, tls={"mode": "ldaps"})
    with pytest.raises(DirectoryTlsError, match=r"tls\.mode"):
        DirectoryReader(config, password=slapd_shared.sync_password).connect()


def test_missing_ca_file(slapd_shared: Slapd, tmp_path: Path) -> None:
    config = make_config(
        slapd_shared, tls={"mode": "starttls", "ca_file": str(tmp_path / "missing.pem")}
    )
    with pytest.raises(DirectoryTlsError, match=r"missing\.pem does not exist"):
        DirectoryReader(config, password=slapd_shared.sync_password).connect()


def test_every_error_is_a_directory_error() -> None:
    for kind in (
        DirectoryAuthFailed,
        DirectoryBaseNotFound,
        DirectoryTlsError,
        DirectoryUnreachable,
    ):
        assert issubclass(kind, DirectoryError)


@pytest.fixture(scope="module")
def slapd_tls() -> Iterator[Slapd]:
    """A slapd with a certificate for 127.0.0.1 and localhost, on ldap:// and ldaps://."""
    server = Slapd(tls=True)
    server.start()
    try:
        server.seed_base()
        yield server
    finally:
        server.stop()


def no_groups(server: Slapd, **overrides: object):
    return make_config(server, groups={"map": {}, "require_mapped_group": False}, **overrides)


def test_starttls_and_ldaps_with_the_right_ca(slapd_tls: Slapd) -> None:
    ca = str(slapd_tls.ca_file)
    for config in (
        no_groups(slapd_tls, tls={"mode": "starttls", "ca_file": ca}),
        no_groups(slapd_tls, url=slapd_tls.ldaps_url, tls={"mode": "ldaps", "ca_file": ca}),
    ):
        with DirectoryReader(config, password=slapd_tls.sync_password) as reader:
            assert reader.current_marker() is not None


def test_certificate_from_another_ca(slapd_tls: Slapd, tmp_path: Path) -> None:
    write_certificates(tmp_path, prefix="other ")
    config = no_groups(slapd_tls, tls={"mode": "starttls", "ca_file": str(tmp_path / "ca.pem")})
    with pytest.raises(DirectoryTlsError) as info:
        DirectoryReader(config, password=slapd_tls.sync_password).connect()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) and "tls.ca_file" in str(info.value)


def test_certificate_for_another_host_name() -> None:
    server = Slapd(tls=True, tls_names=("ldap.example.com",))
    server.start()
    try:
        server.seed_base()
        config = no_groups(
            server, url=server.ldaps_url, tls={"mode": "ldaps", "ca_file": str(server.ca_file)}
        )
        with pytest.raises(DirectoryTlsError, match="host name matches the certificate"):
            DirectoryReader(config, password=server.sync_password).connect()
    finally:
        server.stop()
