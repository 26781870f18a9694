"""The bare ceiling: the least a SCIM service on Flask, gunicorn and SQLite can do per request.

Issue "SCIM at speed" measured it once by hand; this is that server, so that every compare
run measures it beside the others. Per request it checks a bearer token's hash (one indexed
read) and then serves a stored JSON document by one indexed read, or writes one row and one
audit row in a short IMMEDIATE transaction (version-checked, retried on a conflict). No
validation, no seller rules, no uniqueness of addresses, no outbox, no Bulk rollback: every
figure of a real service lies below it on the same machine and server model.

Not a product: only the requests ``bench/scimbench/load.py`` sends are understood.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from scimbench.seed import GROUP_SCHEMA, Tenant, email_of, group_members, user_body

LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
PREFIX = "/bare/v2"
SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, user_name_key TEXT UNIQUE, emails TEXT, doc TEXT, version INTEGER);
CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, doc TEXT, version INTEGER);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at TEXT, target TEXT);
"""
_READ = {t: f"SELECT doc, version FROM {t} WHERE id = ?" for t in ("users", "groups")}  # noqa: S608
_UPDATE = {
    t: f"UPDATE {t} SET doc = ?, version = ? WHERE id = ? AND version = ?"  # noqa: S608
    for t in ("users", "groups")
}
_WHERE = {"all": "", "co": "WHERE emails LIKE ?"}
_COUNT = {k: f"SELECT count(*) FROM users {w}" for k, w in _WHERE.items()}  # noqa: S608
_PAGE = {
    k: f"SELECT doc FROM users {w} ORDER BY rowid LIMIT ? OFFSET ?"  # noqa: S608
    for k, w in _WHERE.items()
}
_EQ = re.compile(r'^userName eq "(.*)"$')
_CO = re.compile(r'^emails\.value co "(.*)"$')


class Conflict(Exception):
    """The row changed between its read and its write."""


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are begun explicitly, as short as they can be.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _document(kind: str, id_: str, body: dict[str, Any], version: int) -> dict[str, Any]:
    body = {**body, "id": id_}
    body["meta"] = {
        "resourceType": kind,
        "lastModified": _now(),
        "version": f'W/"{version}"',
        "location": f"{PREFIX}/{kind}s/{id_}",
    }
    return body


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        document = document.setdefault(name, {})
    document[leaf] = value


def seed(path: Path, token: str, users: int, groups: int) -> Tenant:
    """A fresh database with the same users and groups the others are seeded with."""
    connection = _connect(path)
    connection.executescript(SCHEMA)
    tenant = Tenant(token=token)
    connection.execute("BEGIN")
    connection.execute(
        "INSERT INTO tokens VALUES (?)", (hashlib.sha256(token.encode()).hexdigest(),)
    )
    rows = []
    for index in range(users):
        name = email_of(index)
        id_ = uuid.uuid4().hex
        document = _document("User", id_, user_body(name, index), 1)
        rows.append((id_, name.lower(), name.lower(), json.dumps(document), 1))
        tenant.user_ids.append(id_)
        tenant.user_names.append(name)
    connection.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows)
    for group in range(groups):
        id_ = uuid.uuid4().hex
        members = [
            {"value": tenant.user_ids[u], "type": "User"}
            for u in group_members(group, groups, users)
        ]
        body = {"schemas": [GROUP_SCHEMA], "displayName": f"Team {group:04d}", "members": members}
        connection.execute(
            "INSERT INTO groups VALUES (?, ?, 1)",
            (id_, json.dumps(_document("Group", id_, body, 1))),
        )
        tenant.group_ids.append(id_)
    connection.execute("COMMIT")
    connection.close()
    return tenant


def create_app(path: Path) -> Flask:
    """The bare server over the database at ``path`` (seeded by :func:`seed`)."""
    app = Flask("bare")
    local = threading.local()

    def db() -> sqlite3.Connection:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = _connect(path)
        return connection

    def answer(status: int, document: Any = None, text: str | None = None) -> Response:
        body = text if text is not None else ("" if document is None else json.dumps(document))
        return Response(body, status, content_type="application/scim+json")

    def error(status: int, detail: str) -> Response:
        return answer(status, {"status": str(status), "detail": detail})

    @app.before_request
    def authenticate() -> Response | None:
        if request.path == "/healthz":
            return None
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if db().execute("SELECT 1 FROM tokens WHERE hash = ?", (digest,)).fetchone() is None:
            return error(401, "unknown token")
        return None

    @app.get("/healthz")
    def healthz() -> Response:
        return answer(200, {"status": "ok"})

    @app.get(f"{PREFIX}/Users/<id_>")
    def get_user(id_: str) -> Response:
        row = db().execute("SELECT doc FROM users WHERE id = ?", (id_,)).fetchone()
        return answer(200, text=row[0]) if row else error(404, "no such user")

    def listing(total: int, start: int, documents: list[str]) -> Response:
        head = json.dumps(
            {
                "schemas": [LIST_SCHEMA],
                "totalResults": total,
                "startIndex": start,
                "itemsPerPage": len(documents),
            }
        )
        return answer(200, text=f'{head[:-1]}, "Resources": [{", ".join(documents)}]}}')

    @app.get(f"{PREFIX}/Users")
    def list_users() -> Response:
        start = max(1, int(request.args.get("startIndex", 1)))
        count = min(100, int(request.args.get("count", 100)))
        query = request.args.get("filter", "")
        connection = db()
        if match := _EQ.match(query):
            rows = connection.execute(
                "SELECT doc FROM users WHERE user_name_key = ?", (match[1].lower(),)
            ).fetchall()
            return listing(len(rows), 1, [r[0] for r in rows])
        where, args = "all", ()
        if match := _CO.match(query):
            where, args = "co", (f"%{match[1].lower()}%",)
        elif query:
            return error(400, "filter not understood")
        # Both reads in one snapshot, as a real service would answer.
        connection.execute("BEGIN")
        total = connection.execute(_COUNT[where], args).fetchone()[0]
        rows = connection.execute(_PAGE[where], (*args, count, start - 1)).fetchall()
        connection.execute("COMMIT")
        return listing(total, start, [r[0] for r in rows])

    def write(table: str, id_: str, change: Any) -> dict[str, Any] | None:
        """Read, change in Python, then write in a short version-checked transaction."""
        connection = db()
        for _ in range(20):
            row = connection.execute(_READ[table], (id_,)).fetchone()
            if row is None:
                return None
            document, version = json.loads(row[0]), row[1]
            change(document)
            kind = "User" if table == "users" else "Group"
            document = _document(kind, id_, document, version + 1)
            try:
                connection.execute("BEGIN IMMEDIATE")
                updated = connection.execute(
                    _UPDATE[table], (json.dumps(document), version + 1, id_, version)
                ).rowcount
                if not updated:
                    raise Conflict
                connection.execute("INSERT INTO audit (at, target) VALUES (?, ?)", (_now(), id_))
                connection.execute("COMMIT")
                return document
            except Conflict:
                connection.execute("ROLLBACK")
        raise RuntimeError("too many conflicts")

    def patcher(operations: list[dict[str, Any]]) -> Any:
        def change(document: dict[str, Any]) -> None:
            for operation in operations:
                if operation.get("path") == "members":
                    present = {m["value"] for m in document.get("members", [])}
                    for member in operation["value"]:
                        if member["value"] not in present:
                            document.setdefault("members", []).append(member)
                            present.add(member["value"])
                else:
                    _set(document, operation["path"], operation["value"])

        return change

    @app.patch(f"{PREFIX}/Users/<id_>")
    def patch_user(id_: str) -> Response:
        document = write("users", id_, patcher(request.get_json(force=True)["Operations"]))
        return answer(200, document) if document else error(404, "no such user")

    @app.patch(f"{PREFIX}/Groups/<id_>")
    def patch_group(id_: str) -> Response:
        document = write("groups", id_, patcher(request.get_json(force=True)["Operations"]))
        return answer(200, document) if document else error(404, "no such group")

    @app.put(f"{PREFIX}/Users/<id_>")
    def put_user(id_: str) -> Response:
        body = request.get_json(force=True)

        def change(document: dict[str, Any]) -> None:
            document.clear()
            document.update(body)

        document = write("users", id_, change)
        return answer(200, document) if document else error(404, "no such user")

    def insert(connection: sqlite3.Connection, body: dict[str, Any]) -> dict[str, Any] | None:
        id_ = uuid.uuid4().hex
        document = _document("User", id_, body, 1)
        emails = " ".join(e.get("value", "") for e in body.get("emails", [])).lower()
        try:
            connection.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, 1)",
                (id_, body["userName"].lower(), emails, json.dumps(document)),
            )
        except sqlite3.IntegrityError:
            return None
        connection.execute("INSERT INTO audit (at, target) VALUES (?, ?)", (_now(), id_))
        return document

    @app.post(f"{PREFIX}/Users")
    def create_user() -> Response:
        body = request.get_json(force=True)
        connection = db()
        connection.execute("BEGIN IMMEDIATE")
        document = insert(connection, body)
        connection.execute("COMMIT")
        return answer(201, document) if document else error(409, "userName taken")

    @app.post(f"{PREFIX}/Bulk")
    def bulk() -> Response:
        results = []
        connection = db()
        connection.execute("BEGIN IMMEDIATE")
        for operation in request.get_json(force=True)["Operations"]:
            document = insert(connection, operation["data"])
            result = {"method": "POST", "bulkId": operation.get("bulkId")}
            if document:
                result |= {"status": "201", "location": document["meta"]["location"]}
            else:
                result |= {"status": "409"}
            results.append(result)
        connection.execute("COMMIT")
        return answer(200, {"schemas": [BULK_RESPONSE], "Operations": results})

    return app


def app_from_env() -> Flask:
    """gunicorn's entry: the database named by BARE_DATABASE."""
    return create_app(Path(os.environ["BARE_DATABASE"]))
