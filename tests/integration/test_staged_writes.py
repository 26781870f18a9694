"""A unit of work's staged writes at commit: a run of plain inserts of one statement goes
to the database as one executemany, in the order staged, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select

from connector.adapters.sql.tables import AuditRow, OutboxRow
from connector.ports.store import AuditEvent, OutboxEntry


def test_a_run_of_inserts_goes_as_one_executemany_in_order(
    connector: Any, make_seller: Any
) -> None:
    seller_id = make_seller().seller.id
    executed: list[tuple[str, bool]] = []

    def record(_c: Any, _cursor: Any, sql: str, _p: Any, _ctx: Any, many: bool) -> None:
        if sql.startswith("INSERT"):
            executed.append((sql.split()[2], many))

    event.listen(connector.engine, "before_cursor_execute", record)
    try:
        with connector.uow() as uow:
            for n in range(5):
                uow.outbox.add(OutboxEntry(seller_id, "test.topic", f"first-{n}", {"n": n}))
            uow.audit.append(AuditEvent(seller_id, "test", "test.between", "t:1"))
            for n in range(3):
                uow.outbox.add(OutboxEntry(seller_id, "test.topic", f"then-{n}", {"n": n}))
            uow.audit.append(AuditEvent(seller_id, "test", "test.last", "t:2"))
            uow.commit()
    finally:
        event.remove(connector.engine, "before_cursor_execute", record)

    assert executed == [
        ("outbox", True),
        ("audit_events", False),
        ("outbox", True),
        ("audit_events", False),
    ]
    outbox, audit = OutboxRow.__table__, AuditRow.__table__
    with connector.engine.connect() as connection:
        staged = connection.execute(
            select(outbox.c.aggregate_id)
            .where(outbox.c.topic == "test.topic")
            .order_by(outbox.c.id)
        ).scalars()
        assert list(staged) == [f"first-{n}" for n in range(5)] + [f"then-{n}" for n in range(3)]
        actions = connection.execute(
            select(audit.c.action).where(audit.c.action.like("test.%")).order_by(audit.c.id)
        ).scalars()
        assert list(actions) == ["test.between", "test.last"]
