"""A local SMTP sink for the demo: every email lands as a file in a folder, never leaves.

python deploy/mail_sink.py --port 8025 --dir var/mail
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class FolderHandler:
    """Write each message to DIR/<timestamp>-<n>.eml and print one line about it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{self.count}.eml"
        path.write_bytes(envelope.content)
        print(
            f"mail: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)} saved in {path}",
            flush=True,
        )
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(FolderHandler(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"mail: SMTP sink on 127.0.0.1:{args.port}, writing to {args.dir}", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
