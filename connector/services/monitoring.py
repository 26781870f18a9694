"""Recording what ``/metrics`` shows about runs that happen outside the web service.

A directory sync runs in its own process (``seller-connector directory sync`` or ``watch``),
perhaps on another machine: it records each run in the store, and every ``/metrics`` of every
machine reads the last one per source from there (``connector.entrypoints.metrics``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

from connector.domain.model import utcnow
from connector.ports.monitoring import DIRECTORY_RUN_PREFIX, DirectoryRun
from connector.ports.store import UnitOfWorkFactory


def record_directory_run(
    uow_factory: UnitOfWorkFactory,
    source_id: str,
    *,
    seconds: float,
    ok: bool,
    full: bool,
    counts: Mapping[str, int],
    seller_id: str | None = None,
    finished_at: dt.datetime | None = None,
) -> DirectoryRun:
    """Store the last run of directory source ``source_id`` for ``/metrics``: how long it took,
    whether everything planned was applied, whether it was a full run, and what it did by kind
    (e.g. ``{"created": 12, "updated": 3, "deactivated": 1, "failed": 0}``; kinds are free,
    each becomes a label value). The previous record of the source is replaced.

    Call it once per run, dry runs excepted, after the run: ``directory sync`` and ``watch``
    (``connector.entrypoints.cli.directory``) with ``connector.uow``.
    """
    run = DirectoryRun(
        source_id=source_id,
        finished_at=finished_at or utcnow(),
        seconds=float(seconds),
        ok=bool(ok),
        full=bool(full),
        counts={str(k): int(v) for k, v in counts.items()},
        seller_id=seller_id,
    )
    record = {
        "v": 1,
        "finished_at": run.finished_at.isoformat(),
        "seconds": run.seconds,
        "ok": run.ok,
        "full": run.full,
        "counts": dict(run.counts),
        "seller_id": run.seller_id,
    }
    with uow_factory() as uow:
        uow.markers.set(DIRECTORY_RUN_PREFIX + source_id, json.dumps(record))
        uow.commit()
    return run
