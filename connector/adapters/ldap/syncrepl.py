"""The LDAP content synchronization operation (RFC 4533), refreshOnly, for delta runs.

OpenLDAP's syncprov overlay answers a search that carries the Sync Request control
with the entries changed since a cookie, and tells which entries left the search's
scope (deleted, moved out of the base DN, no longer matching the filter):

* with a session log (``olcSpSessionlog``) covering the cookie, in a *delete phase*:
  the gone entries' entryUUIDs in ``syncIdSet`` messages with ``refreshDeletes``;
* otherwise in a *present phase*: every unchanged entry's entryUUID (``syncIdSet``
  without ``refreshDeletes``, or entries in state ``present``); whatever the client
  knows and is not named has left.

ldap3 sends the request as a raw control and returns the intermediate messages and
controls undecoded: they are decoded here with pyasn1 (ldap3's own ASN.1 library),
after the ASN.1 module of RFC 4533 section 2.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ldap3.protocol.controls import build_control
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type.namedtype import DefaultedNamedType, NamedType, NamedTypes, OptionalNamedType
from pyasn1.type.namedval import NamedValues
from pyasn1.type.tag import Tag, tagClassContext, tagFormatConstructed, tagFormatSimple
from pyasn1.type.univ import Boolean, Choice, Enumerated, OctetString, Sequence, SetOf

SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO_OID = "1.3.6.1.4.1.4203.1.9.1.4"
SYNC_REFRESH_REQUIRED = 4096
"""The result code (e-syncRefreshRequired) of a cookie the server can no longer serve."""


class SyncError(ValueError):
    """A content synchronization message could not be decoded."""


# -- The ASN.1 module of RFC 4533 -----------------------------------------------------


class SyncRequestValue(Sequence):
    """syncRequestValue ::= SEQUENCE { mode ENUMERATED, cookie syncCookie OPTIONAL,
    reloadHint BOOLEAN DEFAULT FALSE }"""

    componentType = NamedTypes(
        NamedType(
            "mode",
            Enumerated(namedValues=NamedValues(("refreshOnly", 1), ("refreshAndPersist", 3))),
        ),
        OptionalNamedType("cookie", OctetString()),
        DefaultedNamedType("reloadHint", Boolean(False)),
    )


class SyncStateValue(Sequence):
    """syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID syncUUID,
    cookie syncCookie OPTIONAL }"""

    componentType = NamedTypes(
        NamedType(
            "state",
            Enumerated(
                namedValues=NamedValues(("present", 0), ("add", 1), ("modify", 2), ("delete", 3))
            ),
        ),
        NamedType("entryUUID", OctetString()),
        OptionalNamedType("cookie", OctetString()),
    )


class SyncDoneValue(Sequence):
    """syncDoneValue ::= SEQUENCE { cookie syncCookie OPTIONAL,
    refreshDeletes BOOLEAN DEFAULT FALSE }"""

    componentType = NamedTypes(
        OptionalNamedType("cookie", OctetString()),
        DefaultedNamedType("refreshDeletes", Boolean(False)),
    )


class _RefreshDelete(Sequence):
    tagSet = Sequence.tagSet.tagImplicitly(Tag(tagClassContext, tagFormatConstructed, 1))
    componentType = NamedTypes(
        OptionalNamedType("cookie", OctetString()),
        DefaultedNamedType("refreshDone", Boolean(True)),
    )


class _RefreshPresent(Sequence):
    tagSet = Sequence.tagSet.tagImplicitly(Tag(tagClassContext, tagFormatConstructed, 2))
    componentType = NamedTypes(
        OptionalNamedType("cookie", OctetString()),
        DefaultedNamedType("refreshDone", Boolean(True)),
    )


class _SyncIdSet(Sequence):
    tagSet = Sequence.tagSet.tagImplicitly(Tag(tagClassContext, tagFormatConstructed, 3))
    componentType = NamedTypes(
        OptionalNamedType("cookie", OctetString()),
        DefaultedNamedType("refreshDeletes", Boolean(False)),
        NamedType("syncUUIDs", SetOf(componentType=OctetString())),
    )


class SyncInfoValue(Choice):
    """syncInfoValue ::= CHOICE { newcookie [0], refreshDelete [1], refreshPresent [2],
    syncIdSet [3] }"""

    componentType = NamedTypes(
        NamedType(
            "newcookie",
            OctetString().subtype(implicitTag=Tag(tagClassContext, tagFormatSimple, 0)),
        ),
        NamedType("refreshDelete", _RefreshDelete()),
        NamedType("refreshPresent", _RefreshPresent()),
        NamedType("syncIdSet", _SyncIdSet()),
    )


# -- Encoding the request, decoding the answers ----------------------------------------


def sync_request_control(cookie: bytes | None) -> tuple[str, bool, bytes]:
    """The Sync Request control, refreshOnly, from ``cookie`` (None: from the start)."""
    value = SyncRequestValue()
    value["mode"] = 1
    if cookie is not None:
        value["cookie"] = cookie
    return build_control(SYNC_REQUEST_OID, True, value)


def uuid_text(raw: bytes) -> str:
    """A syncUUID (16 octets) as entryUUID's text form."""
    if len(raw) != 16:
        raise SyncError(f"a syncUUID has 16 octets, not {len(raw)}")
    return str(uuid.UUID(bytes=bytes(raw)))


def _decode(value: bytes, spec: object, what: str) -> object:
    try:
        decoded, rest = decoder.decode(value, asn1Spec=spec)
    except PyAsn1Error as exc:
        raise SyncError(f"cannot decode the {what}: {exc}") from exc
    if rest:
        raise SyncError(f"the {what} has {len(rest)} octets too many")
    return decoded


def entry_state(value: bytes) -> tuple[str, str]:
    """(state, entryUUID) of a Sync State control value."""
    decoded = _decode(value, SyncStateValue(), "Sync State control")
    return str(decoded["state"]), uuid_text(bytes(decoded["entryUUID"]))  # type: ignore[index]


def done(value: bytes) -> tuple[bytes | None, bool]:
    """(cookie, refreshDeletes) of a Sync Done control value."""
    decoded = _decode(value, SyncDoneValue(), "Sync Done control")
    cookie = decoded["cookie"]  # type: ignore[index]
    return (bytes(cookie) if cookie.hasValue() else None), bool(decoded["refreshDeletes"])  # type: ignore[index]


@dataclass
class SyncInfo:
    """One Sync Info message: a new cookie, the end of a phase, or a set of entryUUIDs."""

    kind: str
    cookie: bytes | None = None
    ids: list[str] = field(default_factory=list)
    refresh_deletes: bool = False
    """For ``syncIdSet``: True when the ids left the scope, False when they are present."""


def info(value: bytes) -> SyncInfo:
    """Decode a Sync Info intermediate response's value."""
    decoded = _decode(value, SyncInfoValue(), "Sync Info message")
    kind = decoded.getName()  # type: ignore[attr-defined]
    part = decoded.getComponent()  # type: ignore[attr-defined]
    if kind == "newcookie":
        return SyncInfo(kind, cookie=bytes(part))
    cookie = bytes(part["cookie"]) if part["cookie"].hasValue() else None
    if kind == "syncIdSet":
        return SyncInfo(
            kind,
            cookie=cookie,
            ids=[uuid_text(bytes(u)) for u in part["syncUUIDs"]],
            refresh_deletes=bool(part["refreshDeletes"]),
        )
    return SyncInfo(kind, cookie=cookie)
