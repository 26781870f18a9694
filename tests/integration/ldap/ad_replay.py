"""A stand-in for an Active Directory domain controller, for the DirSync tests.

It speaks real LDAP over a loopback socket (messages encoded and decoded with ldap3's
own RFC 4511 ASN.1 classes), so the reader's ldap3 connection, ldap3's decoding of the
DirSync response control and the reader's handling of it all run as against a DC.

* **DirSync searches** are answered from recorded rounds, looked up by the cookie the
  request carries (:class:`DirSyncRound`): the entries and the response control the DC
  sent. Their shape follows [MS-ADTS] 3.1.1.3.4.1.3 (LDAP_SERVER_DIRSYNC_OID: request
  ``{Flags, MaxBytes, Cookie}``, response ``{MoreResults, unused, CookieServer}``) and
  what a DC sends in them: only the changed attributes among those asked for, always
  with ``objectGUID``; deleted objects as tombstones ([MS-ADTS] 3.1.1.5.5.1: moved under
  ``CN=Deleted Objects``, RDN mangled to ``<name>\\0ADEL:<guid>``, ``isDeleted: TRUE``,
  most attributes stripped); moved objects under their new DN.
* **Other searches** (rootDSE, group existence, LDAP_MATCHING_RULE_IN_CHAIN, paged user
  reads, reads by objectGUID or memberOf) are answered from a snapshot of the domain
  (:class:`Snapshot`), with a small filter evaluator (and, or, not, equality, presence,
  the in-chain matching rule; DNs and strings compared case-insensitively, as AD does).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ldap3.protocol.microsoft import DirSyncControlResponseValue
from ldap3.protocol.rfc2696 import RealSearchControlValue
from ldap3.protocol.rfc4511 import (
    Control,
    Controls,
    LDAPMessage,
    PartialAttribute,
    PartialAttributeList,
    ProtocolOp,
    Vals,
)
from ldap3.strategy.base import BaseStrategy
from pyasn1.codec.ber import decoder, encoder

from connector.adapters.ldap.config import normalize_dn

DIRSYNC_OID = "1.2.840.113556.1.4.841"
PAGED_OID = "1.2.840.113556.1.4.319"
IN_CHAIN = "1.2.840.113556.1.4.1941"

Entry = tuple[str, dict[str, list[bytes]]]
"""(DN, attribute name -> raw values)."""


@dataclass
class DirSyncRound:
    """One recorded DirSync answer: to a request carrying ``cookie``."""

    cookie: bytes
    entries: list[Entry]
    next_cookie: bytes
    more: bool = False


@dataclass
class Snapshot:
    """The domain's objects as the DC holds them at one moment."""

    root_dse: dict[str, list[bytes]]
    entries: list[Entry]

    def find(self, dn: str) -> Entry | None:
        key = normalize_dn(dn)
        return next((e for e in self.entries if normalize_dn(e[0]) == key), None)


def _values(attrs: dict[str, list[bytes]], name: str) -> list[bytes]:
    return next((v for k, v in attrs.items() if k.lower() == name.lower()), [])


def _text_equal(a: bytes, b: bytes) -> bool:
    try:
        return normalize_dn(a.decode()) == normalize_dn(b.decode())
    except (UnicodeDecodeError, ValueError):
        return a.lower() == b.lower()


@dataclass
class Node:
    """One BER element: class (0 universal, 1 application, 2 context), tag, value."""

    cls: int
    tag: int
    value: bytes
    children: list[Node]


def ber(data: bytes) -> list[Node]:
    """Parse BER elements. The stand-in reads requests with this rather than ldap3's
    ASN.1 classes: pyasn1 cannot decode an extensibleMatch inside an and-filter with
    them (the client side only ever encodes those)."""
    nodes, pos = [], 0
    while pos < len(data):
        first = data[pos]
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        value = data[pos : pos + length]
        pos += length
        nodes.append(Node(first >> 6, first & 0x1F, value, ber(value) if first & 0x20 else []))
    return nodes


class _Evaluator:
    """Filters (RFC 4511 4.5.1: and [0], or [1], not [2], equality [3], present [7],
    extensible [9]) on the snapshot's entries."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def _groups_of(self, dn: str) -> set[str]:
        """Every group ``dn`` belongs to, directly or through nested groups."""
        found: set[str] = set()
        todo = [normalize_dn(dn)]
        while todo:
            current = todo.pop()
            for group_dn, attrs in self.snapshot.entries:
                group = normalize_dn(group_dn)
                if group in found:
                    continue
                if any(normalize_dn(m.decode()) == current for m in _values(attrs, "member")):
                    found.add(group)
                    todo.append(group)
        return found

    def matches(self, flt: Node, dn: str, attrs: dict[str, list[bytes]]) -> bool:
        kind = flt.tag
        if kind == 0:
            return all(self.matches(f, dn, attrs) for f in flt.children)
        if kind == 1:
            return any(self.matches(f, dn, attrs) for f in flt.children)
        if kind == 2:
            return not self.matches(flt.children[0], dn, attrs)
        if kind == 7:
            return bool(_values(attrs, flt.value.decode()))
        if kind == 3:
            name, wanted = flt.children[0].value.decode(), flt.children[1].value
            if name.lower() == "memberof":
                return normalize_dn(wanted.decode()) in {
                    normalize_dn(g.decode()) for g in _values(attrs, "memberOf")
                }
            if name.lower() == "objectcategory":
                # AD takes a class name for its objectCategory DN ("person": CN=Person,...).
                return any(
                    v.decode().split(",")[0].partition("=")[2].lower() == wanted.decode().lower()
                    or _text_equal(v, wanted)
                    for v in _values(attrs, name)
                )
            return any(
                v == wanted if name.lower() == "objectguid" else _text_equal(v, wanted)
                for v in _values(attrs, name)
            )
        if kind == 9:
            parts = {c.tag: c.value for c in flt.children}
            if parts.get(1) == IN_CHAIN.encode() and parts.get(2, b"").lower() == b"memberof":
                return normalize_dn(parts[3].decode()) in self._groups_of(dn)
        raise AssertionError(f"the stand-in DC does not evaluate filters of tag {kind}")


class ReplayDC:
    """A loopback LDAP server answering as an AD domain controller (see the module)."""

    def __init__(self, snapshot: Snapshot, rounds: Iterable[DirSyncRound]) -> None:
        self.snapshot = snapshot
        self.rounds = {r.cookie: r for r in rounds}
        self.requests: list[dict[str, Any]] = []
        """What was asked, for the tests to look at (base, filter, DirSync cookie)."""
        self.errors: list[str] = []
        self.refuse_dirsync = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def __enter__(self) -> ReplayDC:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped = True
        self._thread.join(timeout=5)
        self._listener.close()

    def add_rounds(self, rounds: Iterable[DirSyncRound]) -> None:
        self.rounds.update((r.cookie, r) for r in rounds)

    # -- the connection loop ------------------------------------------------------------

    def _serve(self) -> None:
        self._listener.settimeout(0.1)  # closing the socket does not wake accept()
        while not self._stopped:
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            threading.Thread(target=self._talk, args=(connection,), daemon=True).start()

    def _talk(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                size = BaseStrategy.compute_ldap_message_size(buffer)
                if size == -1 or len(buffer) < size:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                [message] = ber(buffer[:size])
                buffer = buffer[size:]
                message_id = int.from_bytes(message.children[0].value, "big")
                op = message.children[1]
                if op.tag == 2:  # unbindRequest
                    return
                controls: dict[str, bytes] = {}
                if len(message.children) > 2:
                    for control in message.children[2].children:
                        oid = control.children[0].value.decode()
                        value = [c.value for c in control.children[1:] if c.tag == 4]
                        controls[oid] = value[0] if value else b""
                try:
                    replies = self._answer(op, controls)
                except Exception as exc:  # a test must see it, not a hung client
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    replies = [self._done("searchResDone", 80, str(exc))]
                for op, controls in replies:
                    connection.sendall(_encode(message_id, op, controls))

    # -- answers ------------------------------------------------------------------------

    def _answer(
        self, op: Node, controls: dict[str, bytes]
    ) -> list[tuple[ProtocolOp, list[Control]]]:
        if op.tag == 0:  # bindRequest: any simple bind is accepted here
            return [self._done("bindResponse", 0, "")]
        if op.tag != 3:
            raise AssertionError(f"the stand-in DC serves binds and searches, not op {op.tag}")
        base_node, scope_node, *_, filter_node, attributes_node = op.children
        base = base_node.value.decode()
        scope = int.from_bytes(scope_node.value, "big")
        wanted = [a.value.decode() for a in attributes_node.children]
        if DIRSYNC_OID in controls:
            if self.refuse_dirsync:  # an account without Replicating Directory Changes
                self.requests.append({"base": base, "scope": 2, "dirsync": b"refused"})
                return [
                    self._done(
                        "searchResDone",
                        50,
                        "00002105: SecErr: DSID-03152857, problem 4003 "
                        "(INSUFF_ACCESS_RIGHTS), data 0",
                    )
                ]
            return self._dirsync(base, controls[DIRSYNC_OID], wanted)
        self.requests.append({"base": base, "scope": scope, "dirsync": None})
        if base == "" and scope == 0:
            return [
                self._entry("", self.snapshot.root_dse, wanted),
                self._done("searchResDone", 0, ""),
            ]
        evaluator = _Evaluator(self.snapshot)
        if scope == 0:
            found = self.snapshot.find(base)
            if found is None:
                return [self._done("searchResDone", 32, "0000208D: NameErr: DSID-0310020A")]
            candidates = [found]
        else:
            key = normalize_dn(base)
            candidates = [
                e
                for e in self.snapshot.entries
                if normalize_dn(e[0]) == key or normalize_dn(e[0]).endswith("," + key)
            ]
        replies = [
            self._entry(dn, attrs, wanted)
            for dn, attrs in candidates
            if evaluator.matches(filter_node, dn, attrs)
        ]
        done_controls = []
        if PAGED_OID in controls:
            value = RealSearchControlValue()
            value["size"] = 0
            value["cookie"] = b""
            done_controls.append(_control(PAGED_OID, encoder.encode(value)))
        return [*replies, self._done("searchResDone", 0, "", done_controls)]

    def _dirsync(
        self, base: str, value: bytes, wanted: list[str]
    ) -> list[tuple[ProtocolOp, list[Control]]]:
        from ldap3.protocol.microsoft import DirSyncControlRequestValue

        request, _ = decoder.decode(value, asn1Spec=DirSyncControlRequestValue())
        cookie = bytes(request["Cookie"])
        self.requests.append({"base": base, "scope": 2, "dirsync": cookie})
        found = self.rounds.get(cookie)
        if found is None:
            raise AssertionError(f"no recorded DirSync round for cookie {cookie!r}")
        response = DirSyncControlResponseValue()
        response["MoreResults"] = 1 if found.more else 0
        response["unused"] = 0
        response["CookieServer"] = found.next_cookie
        replies = [self._entry(dn, attrs, wanted, all_given=True) for dn, attrs in found.entries]
        control = _control(DIRSYNC_OID, encoder.encode(response))
        return [*replies, self._done("searchResDone", 0, "", [control])]

    @staticmethod
    def _entry(
        dn: str, attrs: dict[str, list[bytes]], wanted: list[str], *, all_given: bool = False
    ) -> tuple[ProtocolOp, list[Control]]:
        names = {w.lower() for w in wanted}
        entry = ProtocolOp()
        result = entry.setComponentByName("searchResEntry").getComponentByName("searchResEntry")
        result["object"] = dn
        attributes = PartialAttributeList()
        for name, values in attrs.items():
            if not values or (not all_given and name.lower() not in names and "*" not in names):
                continue
            attribute = PartialAttribute()
            attribute["type"] = name
            vals = Vals()
            for n, v in enumerate(values):
                vals.setComponentByPosition(n, v)
            attribute["vals"] = vals
            attributes.setComponentByPosition(len(attributes), attribute)
        result["attributes"] = attributes
        return entry, []

    @staticmethod
    def _done(
        name: str, code: int, message: str, controls: list[Control] | None = None
    ) -> tuple[ProtocolOp, list[Control]]:
        op = ProtocolOp()
        result = op.setComponentByName(name).getComponentByName(name)
        result["resultCode"] = code
        result["matchedDN"] = ""
        result["diagnosticMessage"] = message
        return op, controls or []


def _control(oid: str, value: bytes) -> Control:
    control = Control()
    control["controlType"] = oid
    control["criticality"] = False
    control["controlValue"] = value
    return control


def _encode(message_id: int, op: ProtocolOp, controls: list[Control]) -> bytes:
    message = LDAPMessage()
    message["messageID"] = message_id
    message["protocolOp"] = op
    if controls:
        holder = Controls()
        for n, control in enumerate(controls):
            holder.setComponentByPosition(n, control)
        message["controls"] = holder
    return encoder.encode(message)
