"""The Active Directory path: delta runs from DirSync (1.2.840.113556.1.4.841), on
recorded DirSync responses replayed by a stand-in DC (``ad_replay``) through ldap3.

The recorded domain: five people in OU=Staff (alice, bob, carol, dave, erin), three
groups in OU=Groups (Catalog Editors, with Catalog Seniors nested in it, and Order
Handlers). Between the first run and the delta, erin is deleted (a tombstone), bob is
moved to OU=Former (out of the base DN), alice's mail changes, dave is disabled
(userAccountControl 514) and leaves nothing else behind. Where the shapes come from:
see ``ad_replay``'s module docstring ([MS-ADTS] 3.1.1.3.4.1.3 and 3.1.1.5.5.1).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connector.adapters.ldap.config import ChangeTracking, DirectoryConfig
from connector.adapters.ldap.reader import DirectoryReader, Marker
from connector.ports.directory import DirectoryAuthFailed
from connector.services.directory.plan import DeactivationReason
from connector.services.directory.sync import SyncResult, SyncState, run_sync
from tests.integration.ldap.ad_replay import DirSyncRound, ReplayDC, Snapshot
from tests.unit.directory.memory_target import MemoryTarget

DOMAIN = "DC=corp,DC=example,DC=com"
STAFF = f"OU=Staff,{DOMAIN}"
FORMER = f"OU=Former,{DOMAIN}"
GROUPS = f"OU=Groups,{DOMAIN}"
DELETED = f"CN=Deleted Objects,{DOMAIN}"
PERSON = f"CN=Person,CN=Schema,CN=Configuration,{DOMAIN}"
CATALOG = f"CN=Catalog Editors,{GROUPS}"
SENIORS = f"CN=Catalog Seniors,{GROUPS}"
ORDERS = f"CN=Order Handlers,{GROUPS}"

GUIDS = {
    name: uuid.UUID(f"6f1c{n:04x}-7d2a-4c3e-9b1f-0a2b3c4d5e6f")
    for n, name in enumerate(
        [
            "alice",
            "bob",
            "carol",
            "dave",
            "erin",
            "catalog",
            "seniors",
            "orders",
            "staff",
            "deleted",
        ]
    )
}
# DirSync cookies are opaque blobs; a DC's begin with the bytes "MSDS".
COOKIE_START = b"MSDS\x03\x00\x00\x00" + bytes(8)
COOKIE_MORE = b"MSDS\x03\x00\x00\x00" + b"\x10\x27" + bytes(6)
COOKIE_1 = b"MSDS\x03\x00\x00\x00" + b"\x20\x4e" + bytes(6)
COOKIE_2 = b"MSDS\x03\x00\x00\x00" + b"\x30\x75" + bytes(6)
COOKIE_3 = b"MSDS\x03\x00\x00\x00" + b"\x31\x75" + bytes(6)

ROOT_DSE = {
    "namingContexts": [
        DOMAIN.encode(),
        f"CN=Configuration,{DOMAIN}".encode(),
        f"CN=Schema,CN=Configuration,{DOMAIN}".encode(),
        f"DC=DomainDnsZones,{DOMAIN}".encode(),
    ],
    "supportedControl": [
        oid.encode()
        for oid in (
            "1.2.840.113556.1.4.319",  # paged results
            "1.2.840.113556.1.4.801",  # SD flags
            "1.2.840.113556.1.4.473",  # sort
            "1.2.840.113556.1.4.528",  # notification
            "1.2.840.113556.1.4.417",  # show deleted
            "1.2.840.113556.1.4.619",  # lazy commit
            "1.2.840.113556.1.4.841",  # DirSync
            "1.2.840.113556.1.4.529",  # extended DN
            "1.2.840.113556.1.4.1339",  # domain scope
            "1.2.840.113556.1.4.2064",  # show recycled
        )
    ],
    "highestCommittedUSN": [b"20480"],
}


def guid(name: str) -> bytes:
    """objectGUID as AD sends it: 16 bytes, the first three fields little-endian."""
    return GUIDS[name].bytes_le


def person(
    uid: str, *, ou: str = STAFF, mail: str | None = None, uac: int = 512, groups: list[str]
) -> tuple[str, dict[str, list[bytes]]]:
    name = f"{uid.capitalize()} Tester"
    return f"CN={name},{ou}", {
        "objectClass": [b"top", b"person", b"organizationalPerson", b"user"],
        "objectCategory": [PERSON.encode()],
        "objectGUID": [guid(uid)],
        "sAMAccountName": [uid.encode()],
        "name": [name.encode()],
        "givenName": [uid.capitalize().encode()],
        "sn": [b"Tester"],
        "mail": [(mail or f"{uid}@corp.example.com").encode()],
        "userAccountControl": [str(uac).encode()],
        "memberOf": [g.encode() for g in groups],
        "instanceType": [b"4"],
    }


def group(key: str, dn: str, members: list[str], member_of: list[str] = ()) -> tuple[str, dict]:  # type: ignore[assignment]
    return dn, {
        "objectClass": [b"top", b"group"],
        "objectCategory": [f"CN=Group,CN=Schema,CN=Configuration,{DOMAIN}".encode()],
        "objectGUID": [guid(key)],
        "name": [dn.split(",")[0][3:].encode()],
        "member": [m.encode() for m in members],
        "memberOf": [g.encode() for g in member_of],
        "instanceType": [b"4"],
    }


def dn_of(uid: str, ou: str = STAFF) -> str:
    return f"CN={uid.capitalize()} Tester,{ou}"


BEFORE = Snapshot(
    ROOT_DSE,
    [
        (STAFF, {"objectClass": [b"top", b"organizationalUnit"], "objectGUID": [guid("staff")]}),
        person("alice", groups=[CATALOG]),
        person("bob", groups=[CATALOG]),
        person("carol", groups=[SENIORS]),
        person("dave", groups=[ORDERS]),
        person("erin", groups=[ORDERS]),
        group("catalog", CATALOG, [dn_of("alice"), dn_of("bob"), SENIORS]),
        group("seniors", SENIORS, [dn_of("carol")], [CATALOG]),
        group("orders", ORDERS, [dn_of("dave"), dn_of("erin")]),
    ],
)
AFTER = Snapshot(
    ROOT_DSE,
    [
        (STAFF, {"objectClass": [b"top", b"organizationalUnit"], "objectGUID": [guid("staff")]}),
        person("alice", mail="alice.smith@corp.example.com", groups=[CATALOG]),
        person("bob", ou=FORMER, groups=[CATALOG]),
        person("carol", groups=[SENIORS]),
        person("dave", uac=514, groups=[ORDERS]),
        group("catalog", CATALOG, [dn_of("alice"), dn_of("bob", FORMER), SENIORS]),
        group("seniors", SENIORS, [dn_of("carol")], [CATALOG]),
        group("orders", ORDERS, [dn_of("dave")]),
    ],
)

# The first run's DirSync from no cookie: every user and group (with the attributes
# asked for), in two rounds, MoreResults set on the first.
INITIAL = [
    DirSyncRound(b"", BEFORE.entries[1:4], COOKIE_MORE, more=True),
    DirSyncRound(COOKIE_MORE, BEFORE.entries[4:], COOKIE_1),
]
# The delta's DirSync: only what changed, with objectGUID and instanceType.
tombstone = f"Erin Tester\\0ADEL:{GUIDS['erin']}"
CHANGES = DirSyncRound(
    COOKIE_1,
    [
        (
            f"CN={tombstone},{DELETED}",
            {
                "objectGUID": [guid("erin")],
                "instanceType": [b"4"],
                "isDeleted": [b"TRUE"],
                "name": [f"Erin Tester\nDEL:{GUIDS['erin']}".encode()],
                "parentGUID": [guid("deleted")],
            },
        ),
        (
            dn_of("bob", FORMER),
            {
                "objectGUID": [guid("bob")],
                "instanceType": [b"4"],
                "name": [b"Bob Tester"],
                "parentGUID": [bytes(16)],
            },
        ),
        (
            dn_of("alice"),
            {
                "objectGUID": [guid("alice")],
                "instanceType": [b"4"],
                "mail": [b"alice.smith@corp.example.com"],
            },
        ),
        (
            dn_of("dave"),
            {"objectGUID": [guid("dave")], "instanceType": [b"4"], "userAccountControl": [b"514"]},
        ),
        (
            ORDERS,
            {
                "objectGUID": [guid("orders")],
                "instanceType": [b"4"],
                "member": [dn_of("dave").encode()],
            },
        ),
    ],
    COOKIE_2,
)
NOTHING = DirSyncRound(COOKIE_2, [], COOKIE_3)


def config(dc: ReplayDC, **extra: object) -> DirectoryConfig:
    data: dict[str, object] = {
        "id": "corp-ad",
        "preset": "active_directory",
        "url": dc.url,
        "bind_dn": f"CN=svc-seller-sync,OU=Service Accounts,{DOMAIN}",
        "bind_password_env": "UNUSED",
        "base_dn": STAFF,
        "groups": {
            "base_dn": GROUPS,
            "map": {CATALOG: "Catalog editors", ORDERS: "Order handlers"},
        },
        "seller": {"id": "seller-1"},
        "deactivation_threshold": 0.7,
        "connect_timeout": 2,
        "receive_timeout": 10,
    }
    data.update(extra)
    return DirectoryConfig.model_validate(data)


def sync(dc: ReplayDC, target: MemoryTarget, cfg: DirectoryConfig, **kwargs: object) -> SyncResult:
    with DirectoryReader(cfg, password="not-checked-by-the-stand-in") as reader:
        result = run_sync(cfg, reader, target, **kwargs)  # type: ignore[arg-type]
    assert not dc.errors, dc.errors
    return result


@pytest.fixture
def dc() -> Iterator[ReplayDC]:
    with ReplayDC(BEFORE, [*INITIAL, CHANGES, NOTHING]) as server:
        yield server


def by_email(target: MemoryTarget, email: str):
    return next(u for u in target.users.values() if email in u.emails)


def test_a_dirsync_delta_deactivates_the_deleted_and_the_moved_out(dc: ReplayDC) -> None:
    target = MemoryTarget(permission_sets={"Catalog editors", "Order handlers"})
    cfg = config(dc)
    first = sync(dc, target, cfg)
    assert first.full and first.ok and len(first.plan.creates) == 5
    assert by_email(target, "carol@corp.example.com").permission_sets == {"Catalog editors"}
    assert by_email(target, "alice@corp.example.com").external_id == str(GUIDS["alice"])
    state = SyncState.load(target.markers["corp-ad"])
    assert state and state.marker
    marker = Marker.load(state.marker)
    assert (marker.tracking, marker.cookie) == (ChangeTracking.dirsync, COOKIE_1)
    # The cookie was taken from the start, both rounds followed.
    assert [r["dirsync"] for r in dc.requests if r["dirsync"] is not None] == [b"", COOKIE_MORE]

    users = {u: by_email(target, f"{u}@corp.example.com") for u in ("alice", "bob", "dave", "erin")}
    dc.snapshot = AFTER
    delta = sync(dc, target, cfg)
    assert not delta.full and delta.ok and delta.marker_stored
    assert sorted((d.user_id, d.reason) for d in delta.plan.deactivations) == sorted(
        [
            (users["erin"].id, DeactivationReason.left_directory),  # tombstone
            (users["bob"].id, DeactivationReason.left_directory),  # moved out of OU=Staff
            (users["dave"].id, DeactivationReason.disabled),
        ]
    )
    [update] = delta.plan.updates
    assert (update.user_id, update.email) == (users["alice"].id, "alice.smith@corp.example.com")
    assert not delta.plan.creates and len(target.users) == 5  # deactivated, never deleted
    assert Marker.load(SyncState.load(target.markers["corp-ad"]).marker).cookie == COOKIE_2  # type: ignore[union-attr,arg-type]

    again = sync(dc, target, cfg)
    assert not again.full and again.plan.is_empty
    assert Marker.load(SyncState.load(target.markers["corp-ad"]).marker).cookie == COOKIE_3  # type: ignore[union-attr,arg-type]


def test_the_threshold_applies_to_dirsync_deltas(dc: ReplayDC) -> None:
    target = MemoryTarget(permission_sets={"Catalog editors", "Order handlers"})
    cfg = config(dc, deactivation_threshold=0.2)
    assert sync(dc, target, cfg).full
    before, markers = target.snapshot(), dict(target.markers)
    dc.snapshot = AFTER
    from connector.ports.directory import ThresholdExceeded

    with pytest.raises(ThresholdExceeded, match=r"deactivate 3 of 5"):
        sync(dc, target, cfg)
    assert target.snapshot() == before and target.markers == markers


def test_without_the_right_dirsync_falls_back_to_usn_changed(dc: ReplayDC) -> None:
    dc.refuse_dirsync = True
    target = MemoryTarget(permission_sets={"Catalog editors", "Order handlers"})
    lines: list[str] = []
    first = sync(dc, target, config(dc), progress=lines.append)
    assert first.full and first.ok
    assert any("DirSync was refused" in line and "usn_changed" in line for line in lines)
    marker = Marker.load(SyncState.load(target.markers["corp-ad"]).marker)  # type: ignore[union-attr,arg-type]
    assert (marker.tracking, marker.value) == (ChangeTracking.usn_changed, "20480")


def test_dirsync_asked_for_without_the_right_is_an_error(dc: ReplayDC) -> None:
    dc.refuse_dirsync = True
    target = MemoryTarget(permission_sets={"Catalog editors", "Order handlers"})
    with pytest.raises(DirectoryAuthFailed, match="Replicating Directory Changes"):
        sync(dc, target, config(dc, change_tracking="dirsync"))
    assert not target.users and not target.markers
