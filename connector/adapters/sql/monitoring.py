"""The store's side of ``/metrics`` (:class:`~connector.ports.monitoring.MonitoringReader`)."""

from __future__ import annotations

import datetime as dt
import json
import logging

from sqlalchemy import Engine, select

from connector.adapters.sql.database import read_transaction
from connector.adapters.sql.outbox_queue import SqlOutboxQueue
from connector.adapters.sql.tables import MarkerRow
from connector.ports.monitoring import (
    DIRECTORY_RUN_PREFIX,
    DirectoryRun,
    MonitoringSnapshot,
)

log = logging.getLogger(__name__)

DIRECTORY_STATE_PREFIX = "directory:"
"""Where the directory sync keeps each source's state (``MARKER_PREFIX`` of
``connector.services.directory.target``; a test keeps the two the same)."""


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


class SqlMonitoring:
    """Reads the outbox backlog and the directory runs at scrape time (two short reads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue = SqlOutboxQueue(engine)

    def snapshot(self, now: dt.datetime) -> MonitoringSnapshot:
        """The outbox backlog, each directory source's last recorded run and last state."""
        backlog = self.queue.backlog(now)
        runs: list[DirectoryRun] = []
        states: dict[str, dt.datetime] = {}
        with read_transaction(self.engine) as session:
            rows = session.execute(
                select(MarkerRow.source, MarkerRow.marker, MarkerRow.updated_at).where(
                    MarkerRow.source.startswith(DIRECTORY_RUN_PREFIX, autoescape=True)
                    | MarkerRow.source.startswith(DIRECTORY_STATE_PREFIX, autoescape=True)
                )
            ).all()
        for source, marker, updated_at in rows:
            if source.startswith(DIRECTORY_STATE_PREFIX):
                states[source[len(DIRECTORY_STATE_PREFIX) :]] = _utc(updated_at)
                continue
            try:
                data = json.loads(marker or "")
                runs.append(
                    DirectoryRun(
                        source_id=source[len(DIRECTORY_RUN_PREFIX) :],
                        finished_at=_utc(dt.datetime.fromisoformat(data["finished_at"])),
                        seconds=float(data["seconds"]),
                        ok=bool(data["ok"]),
                        full=bool(data["full"]),
                        counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
                        seller_id=data.get("seller_id"),
                    )
                )
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable directory run record %s: skipped", source)
        runs.sort(key=lambda r: r.source_id)
        return MonitoringSnapshot(backlog=backlog, directory_runs=runs, directory_states=states)
