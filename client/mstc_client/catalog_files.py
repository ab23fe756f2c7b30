"""Turning a catalog's text (or bytes) into a `Catalog`: the format guessed, hostile input refused.

Two formats, one result: YAML (`catalog_yaml`, the full entry model) and the MQTT job
listener's jobs.csv (`catalog_csv`, read as its users write it). `parse_catalog` picks the
format from `fmt`, else from a ".csv" source name or a first line starting "job_name,";
anything else is YAML.

A catalog is refused whole at its first problem with `CatalogInvalid(source, line,
reason)`: the flow service then keeps its last good catalog, and `mstc catalog validate`
prints the place. Before any parsing, the size is capped (`MAX_CATALOG_BYTES`, 1 MiB) and
bytes must be UTF-8 (a byte-order mark, as spreadsheet programs write, is dropped).

The CSV's parallelism rule (N > 1 means completions N and parallelism N, because the
listener's work-queue pods each drain a shared queue) is explained in `catalog_csv`.
"""

from __future__ import annotations

from mstc_client.catalog import Catalog, digest_of
from mstc_client.catalog_csv import parse_csv
from mstc_client.catalog_rules import MAX_CATALOG_BYTES
from mstc_client.catalog_yaml import parse_yaml
from mstc_client.errors import CatalogInvalid

__all__ = ["FORMATS", "MAX_CATALOG_BYTES", "decode_catalog", "guess_format", "parse_catalog"]

FORMATS = ("yaml", "csv")
_BOM = "\ufeff"


def guess_format(text: str, source: str) -> str:
    """ "csv" for a ".csv" source or a text whose first line starts "job_name,"; else "yaml"."""
    if source.lower().endswith(".csv") or text.lstrip(_BOM).startswith("job_name,"):
        return "csv"
    return "yaml"


def decode_catalog(data: bytes, *, source: str) -> str:
    """The text of a catalog read as bytes: size capped, UTF-8 required (line of a bad byte)."""
    _check_size(len(data), source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CatalogInvalid(source, line, f"not UTF-8 text (byte {exc.start})") from exc


def parse_catalog(text: str, *, source: str, fmt: str | None = None) -> Catalog:
    """The catalog `text` holds; `source` names it in every message and in `Catalog.source`."""
    _check_size(len(text.encode("utf-8", errors="surrogatepass")), source)
    if fmt is not None and fmt not in FORMATS:
        raise CatalogInvalid(source, 0, f"unknown catalog format {fmt!r}; known: yaml, csv")
    chosen = fmt or guess_format(text, source)
    body = text.removeprefix(_BOM)
    if "\x00" in body:
        line = body.count("\n", 0, body.index("\x00")) + 1
        raise CatalogInvalid(source, line, "the text holds a NUL character (a binary file?)")
    entries = parse_csv(body, source) if chosen == "csv" else parse_yaml(body, source)
    return Catalog(entries=tuple(entries), source=source, digest=digest_of(text))


def _check_size(size: int, source: str) -> None:
    if size > MAX_CATALOG_BYTES:
        raise CatalogInvalid(
            source, 0, f"the catalog is {size} bytes, over the limit of {MAX_CATALOG_BYTES}"
        )
