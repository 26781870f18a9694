"""Directory source configuration: presets, secrets never inline, errors with file and line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from connector.adapters.ldap.config import (
    ChangeTracking,
    DirectoryConfig,
    DirectoryConfigError,
    NestedGroups,
    load_directory_config,
    normalize_dn,
)
from connector.adapters.ldap.reader import (
    Marker,
    entry_to_user,
    stable_id_filter_value,
    stable_id_text,
)
from connector.mappings import MappingError
from connector.ports.directory import DirectoryUser, MarkerError, Problem

EXAMPLES = Path(__file__).resolve().parents[3] / "mappings" / "directory"

MINIMAL = """\
id: corp
preset: {preset}
url: ldap://ldap.example.com:389
bind_dn: cn=sync,dc=example,dc=com
bind_password_env: TEST_LDAP_PASSWORD
base_dn: dc=example,dc=com
seller: {{id: seller-1}}
groups:
  map:
    cn=catalog,ou=groups,dc=example,dc=com: Catalog editors
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "source.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["openldap-example.yaml", "active-directory-example.yaml"])
def test_examples_load(name: str) -> None:
    config = load_directory_config(EXAMPLES / name)
    assert config.group_map
    assert config.deactivation_threshold == 0.10


def test_openldap_preset_defaults(tmp_path: Path) -> None:
    c = load_directory_config(write(tmp_path, MINIMAL.format(preset="openldap")))
    assert c.stable_id_attribute == "entryUUID"
    assert c.member_of_attribute == "memberOf"
    # syncprov's content synchronization when the server offers it, else entryCSN.
    assert c.tracking is ChangeTracking.syncrepl
    assert c.fallback_tracking is ChangeTracking.entry_csn
    assert c.nested_groups is NestedGroups.flatten
    assert c.disabled_flag is None
    assert c.effective_user_filter == "(objectClass=inetOrgPerson)"
    assert not c.send_domain_scope
    assert c.full_reconcile_every.runs == 24


def test_active_directory_preset_defaults(tmp_path: Path) -> None:
    c = load_directory_config(write(tmp_path, MINIMAL.format(preset="active_directory")))
    assert c.stable_id_attribute == "objectGUID"
    # DirSync when the DC offers it to the sync account, else uSNChanged.
    assert c.tracking is ChangeTracking.dirsync
    assert c.fallback_tracking is ChangeTracking.usn_changed
    assert c.nested_groups is NestedGroups.in_chain
    assert c.disabled_flag is not None and c.disabled_flag.bitmask == 2
    assert c.disabled_flag.attribute == "userAccountControl"
    assert c.send_domain_scope


def test_file_overrides_the_preset(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap") + (
        "attributes: {stable_id: employeeNumber}\nchange_tracking: modify_timestamp\n"
    )
    c = load_directory_config(write(tmp_path, text))
    assert c.stable_id_attribute == "employeeNumber"
    assert c.tracking is ChangeTracking.modify_timestamp
    assert c.nested_groups is NestedGroups.flatten


def test_inline_password_is_refused_with_its_line(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap") + "bind_password: hunter2\n"
    with pytest.raises(MappingError) as info:
        load_directory_config(write(tmp_path, text))
    message = str(info.value)
    assert "source.yaml:11: bind_password" in message
    assert "bind_password_env" in message
    assert "hunter2" not in message


def test_trailing_slash_in_url_is_refused_with_its_line(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap").replace(":389", ":389/")
    with pytest.raises(MappingError, match=r"source.yaml:3: url: .*trailing|source.yaml:3: url"):
        load_directory_config(write(tmp_path, text))


def test_bad_group_dn_and_unknown_key_name_their_lines(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap") + "    not a dn: Order handlers\npage_sise: 10\n"
    with pytest.raises(MappingError) as info:
        load_directory_config(write(tmp_path, text))
    message = str(info.value)
    assert "source.yaml:11: groups.map" in message and "not a valid DN" in message
    assert "source.yaml:12: page_sise" in message


def test_empty_group_map_needs_require_mapped_group_off(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap").split("groups:")[0]
    with pytest.raises(MappingError, match=r"groups\.map is empty"):
        load_directory_config(write(tmp_path, text))
    c = load_directory_config(write(tmp_path, text + "groups: {require_mapped_group: false}\n"))
    assert c.managed_permission_sets == frozenset()


def test_both_or_no_password_source_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap").replace("bind_password_env: TEST_LDAP_PASSWORD\n", "")
    with pytest.raises(
        MappingError, match="exactly one of bind_password_env or bind_password_file"
    ):
        load_directory_config(write(tmp_path, text))


def test_tls_mode_must_match_the_url(tmp_path: Path) -> None:
    text = MINIMAL.format(preset="openldap") + "tls: {mode: ldaps}\n"
    with pytest.raises(MappingError, match="ldaps needs an ldaps:// url"):
        load_directory_config(write(tmp_path, text))


def test_password_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = load_directory_config(write(tmp_path, MINIMAL.format(preset="openldap")))
    monkeypatch.delenv("TEST_LDAP_PASSWORD", raising=False)
    with pytest.raises(DirectoryConfigError, match="TEST_LDAP_PASSWORD"):
        c.read_bind_password()
    monkeypatch.setenv("TEST_LDAP_PASSWORD", "s3cret")
    assert c.read_bind_password() == "s3cret"


def test_password_from_a_file_relative_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("from-file\n", encoding="utf-8")
    text = MINIMAL.format(preset="openldap").replace(
        "bind_password_env: TEST_LDAP_PASSWORD", "bind_password_file: pw.txt"
    )
    c = load_directory_config(write(tmp_path, text))
    assert c.read_bind_password() == "from-file"
    (tmp_path / "pw.txt").unlink()
    with pytest.raises(DirectoryConfigError, match="cannot read bind_password_file"):
        c.read_bind_password()


def test_normalize_dn() -> None:
    assert (
        normalize_dn("CN=Seller Catalog, OU=Groups,DC=Corp")
        == "cn=seller catalog,ou=groups,dc=corp"
    )
    with pytest.raises(ValueError):
        normalize_dn("nonsense")


def ad_config() -> DirectoryConfig:
    return DirectoryConfig.model_validate(
        {
            "id": "ad",
            "preset": "active_directory",
            "url": "ldaps://dc1.corp.example.com:636",
            "tls": {"mode": "ldaps"},
            "bind_dn": "CN=svc,DC=corp",
            "bind_password_env": "X",
            "base_dn": "DC=corp",
            "groups": {"map": {"CN=Seller Catalog,OU=Groups,DC=corp": "Catalog editors"}},
            "seller": {"name": "Example"},
        }
    )


def test_ad_entry_objectguid_and_user_account_control() -> None:
    config = ad_config()
    guid = uuid.uuid4()
    group_sets = {"cn=seller catalog,ou=groups,dc=corp": frozenset({"Catalog editors"})}
    attrs = {
        "objectguid": [guid.bytes_le],
        "mail": [b"ann@corp.example.com"],
        "givenname": [b"Ann"],
        "sn": [b"Lee"],
        "memberof": [b"CN=Seller Catalog,OU=Groups,DC=corp", b"CN=Other,DC=corp"],
        "useraccountcontrol": [b"514"],  # 512 normal account + 2 disabled
    }
    user = entry_to_user(config, "CN=Ann Lee,DC=corp", attrs, group_sets)
    assert isinstance(user, DirectoryUser)
    assert user.stable_id == str(guid)
    assert user.disabled
    assert user.permission_sets == {"Catalog editors"}
    attrs["useraccountcontrol"] = [b"512"]
    user = entry_to_user(config, "CN=Ann Lee,DC=corp", attrs, group_sets)
    assert isinstance(user, DirectoryUser) and not user.disabled
    # The GUID filter value is the escaped little-endian bytes.
    value = stable_id_filter_value("objectGUID", str(guid))
    assert value == "".join(f"\\{b:02x}" for b in guid.bytes_le)
    assert stable_id_text("objectGUID", guid.bytes_le) == str(guid)


def test_entry_missing_a_required_attribute_is_a_problem() -> None:
    config = ad_config()
    attrs = {"objectguid": [uuid.uuid4().bytes_le], "givenname": [b"Ann"], "sn": [b"Lee"]}
    problem = entry_to_user(config, "CN=Ann,DC=corp", attrs, {})
    assert isinstance(problem, Problem) and "no mail" in problem.message
    attrs["mail"] = [b"not-an-email"]
    problem = entry_to_user(config, "CN=Ann,DC=corp", attrs, {})
    assert isinstance(problem, Problem) and "not an email" in problem.message
    del attrs["objectguid"]
    problem = entry_to_user(config, "CN=Ann,DC=corp", attrs, {})
    assert isinstance(problem, Problem) and "objectGUID" in problem.message


def test_marker_round_trip_and_garbage() -> None:
    marker = Marker(ChangeTracking.entry_csn, "20250101000000.000001Z#000000#000#000000")
    assert Marker.load(marker.dump()) == marker
    with pytest.raises(MarkerError):
        Marker.load("garbage")


def test_ad_nested_groups_are_asked_of_the_dc_in_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.adapters.ldap.reader import DirectoryReader

    reader = DirectoryReader(ad_config(), password="unused")
    filters: list[str] = []

    def fake_search(base, search_filter, attributes, **kwargs):
        filters.append(search_filter)
        if "1.2.840.113556.1.4.1941" in search_filter:
            yield "CN=Nested,OU=Groups,DC=corp", {}

    monkeypatch.setattr(reader, "search", fake_search)
    monkeypatch.setattr(reader, "_exists", lambda dn: True)
    index = reader.group_index()
    assert filters == [
        "(&(objectClass=group)(memberOf:1.2.840.113556.1.4.1941:="
        "cn=seller catalog,ou=groups,dc=corp))"
    ]
    assert index == {
        "cn=seller catalog,ou=groups,dc=corp": frozenset({"Catalog editors"}),
        "cn=nested,ou=groups,dc=corp": frozenset({"Catalog editors"}),
    }


def test_change_filters_per_tracking_kind() -> None:
    from connector.adapters.ldap.reader import DirectoryReader

    reader = DirectoryReader(ad_config(), password="unused")
    csn = "20260101000000.000001Z#000000#000#000000"
    assert reader._changed_filter(Marker(ChangeTracking.entry_csn, csn)) == (
        f"(&(entryCSN>={csn})(!(entryCSN={csn})))"
    )
    assert reader._changed_filter(Marker(ChangeTracking.usn_changed, "41")) == "(uSNChanged>=42)"
    assert reader._changed_filter(Marker(ChangeTracking.modify_timestamp, "20260101000000Z")) == (
        "(modifyTimestamp>=20260101000000Z)"
    )


def test_disabled_flag_rules() -> None:
    from connector.adapters.ldap.config import DisabledFlag

    bitmask = DisabledFlag(attribute="userAccountControl", bitmask=2)
    assert bitmask.is_disabled(["514"]) and not bitmask.is_disabled(["512"])
    assert not bitmask.is_disabled([]) and not bitmask.is_disabled(["garbage"])
    values = DisabledFlag(attribute="employeeType", values=["Disabled", "left"])
    assert values.is_disabled(["disabled"]) and not values.is_disabled(["staff"])
    present = DisabledFlag(attribute="pwdAccountLockedTime", present=True)
    assert present.is_disabled(["000001010000Z"]) and not present.is_disabled([])
    with pytest.raises(ValueError, match="exactly one"):
        DisabledFlag(attribute="x", bitmask=2, present=True)
