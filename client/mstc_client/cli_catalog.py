"""`mstc catalog validate FILE`: check a catalog offline, as the flow service would load it.

Offline on purpose: someone editing jobs.csv or a YAML catalog can check it before
uploading, with no broker, no API and no settings. The file is parsed by the same code the
flow service uses (`mstc_client.catalog_files`), so what passes here loads there.

Output: a table of the entries (name, trigger as written, the AMQP binding key it becomes,
image, concurrency), or with `--json` one object. A refused catalog prints
"SOURCE, line N: REASON" on stderr (the form editors jump to) and exits with the command's
code for bad input (5, `ExitCode.ERROR` in `mstc_client.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from mstc_client.catalog import Catalog, Entry
from mstc_client.catalog_files import FORMATS, MAX_CATALOG_BYTES, decode_catalog, parse_catalog
from mstc_client.errors import CatalogInvalid

__all__ = ["add_catalog_commands", "catalog_main"]

# Exit codes, as mstc_client.cli.ExitCode numbers them (cli imports this module, not the reverse).
_OK = 0
_BAD_INPUT = 5


def add_catalog_commands(catalog_commands: Any) -> None:
    """Add `validate` to the `mstc catalog` subcommands (`cli_flow` makes `catalog` itself)."""
    validate = catalog_commands.add_parser(
        "validate",
        help="parse a YAML or CSV catalog and list its entries; exit 5 naming the first problem",
    )
    validate.add_argument("file", metavar="FILE", help="the catalog ('-' for stdin)")
    validate.add_argument("--json", action="store_true", help="print one JSON object")
    validate.add_argument(
        "--format", choices=FORMATS, help="yaml or csv (default: guessed from the name and text)"
    )
    # Offline: run before any settings are read (cli.main runs a command's own handler).
    validate.set_defaults(handler=lambda args, _env: catalog_main(args))


def catalog_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `mstc catalog validate`; returns the exit code."""
    out = out or sys.stdout
    source = "<stdin>" if args.file == "-" else args.file
    try:
        catalog = parse_catalog(_read(args.file, source), source=source, fmt=args.format)
    except CatalogInvalid as exc:
        if args.json:
            problem = {"status": "invalid", "source": exc.source, "line": exc.line,
                       "reason": exc.reason, "exitCode": _BAD_INPUT}  # fmt: skip
            out.write(json.dumps(problem) + "\n")
        sys.stderr.write(f"{exc}\n")
        return _BAD_INPUT
    out.write((json.dumps(_catalog_object(catalog)) if args.json else _table(catalog)) + "\n")
    return _OK


def _read(path: str, source: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_CATALOG_BYTES + 1)
        else:
            with Path(path).open("rb") as stream:
                data = stream.read(MAX_CATALOG_BYTES + 1)  # enough to see it is too big
    except OSError as exc:
        raise CatalogInvalid(source, 0, f"cannot read it: {exc.strerror or exc}") from exc
    return decode_catalog(data, source=source)


def _entry_object(entry: Entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "line": entry.line,
        "trigger": entry.trigger.topic if entry.trigger else None,
        "bindingKey": entry.trigger.binding_key if entry.trigger else None,
        "image": entry.request.get("image"),
        "concurrency": entry.concurrency.value,
        "maxInFlight": entry.max_in_flight,
        "request": dict(entry.request),
    }


def _catalog_object(catalog: Catalog) -> dict[str, Any]:
    return {
        "status": "valid",
        "source": catalog.source,
        "digest": catalog.digest,
        "entries": [_entry_object(entry) for entry in catalog.entries],
    }


def _table(catalog: Catalog) -> str:
    header = ("NAME", "TRIGGER", "BINDING KEY", "IMAGE", "CONCURRENCY")
    rows = [header] + [
        (
            e.name,
            e.trigger.topic if e.trigger else "(by hand)",
            e.trigger.binding_key if e.trigger else "-",
            str(e.request.get("image")),
            e.concurrency.value + (f" max {e.max_in_flight}" if e.max_in_flight else ""),
        )
        for e in catalog.entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    count = len(catalog.entries)
    lines.append(f"{catalog.source}: {count} {'entry' if count == 1 else 'entries'}, valid")
    return "\n".join(lines)
