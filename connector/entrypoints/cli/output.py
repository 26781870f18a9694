"""Tables for people, JSON and CSV for scripts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import click

FORMATS = click.Choice(["table", "json", "csv"])


def format_option(func: Any) -> Any:
    """Add --format table|json|csv (table by default) to a listing command."""
    return click.option(
        "--format",
        "output_format",
        type=FORMATS,
        default="table",
        show_default=True,
        help="table for people; json or csv for scripts.",
    )(func)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(
    output_format: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], data: Any
) -> None:
    """Print rows as a table or CSV, or ``data`` as JSON."""
    if output_format == "json":
        emit_json(data)
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(headers)
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        click.echo(table(headers, rows) if rows else "(none)")
