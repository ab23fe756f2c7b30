"""Where the catalog comes from and how a new version becomes the active one.

`settings.catalog` names the source: `file:PATH`, `configmap:NAMESPACE/NAME[/KEY]` or
`s3://BUCKET/OBJECT`. Each `CatalogSource` gives a cheap `version()` (a file's mtime and
size, a ConfigMap's resourceVersion, an object's ETag) and a `read()` of the text with the
version of what was read, so the keeper fetches and parses only what changed.

`CatalogKeeper` polls every `catalog_poll_seconds` (and at once on `reload_now()`, for the
refresh topic). A new version is parsed by `mstc_client.catalog_files`; only a valid
catalog reaches `on_change`. An invalid one is refused whole: logged with its line and
reason, kept as `last_error` for the API, and the last good catalog stays active (the
version is remembered, so a broken file is not re-parsed and re-logged every poll). A
source that cannot be read (server down, object missing) also keeps the last good catalog
and is tried again at the next poll.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from mstc_client.catalog import Catalog
from mstc_client.catalog_files import MAX_CATALOG_BYTES, decode_catalog, parse_catalog
from mstc_client.config import ClientConfig
from mstc_client.errors import CatalogInvalid
from mstc_flow.errors import CatalogError, ConfigError, FlowError, NotFound, TransientError
from mstc_flow.kube import ConfigMapReader, kube_api_client
from mstc_flow.objects import ObjectReader

__all__ = [
    "CatalogKeeper",
    "CatalogSource",
    "ConfigMapSource",
    "FileSource",
    "S3Source",
    "open_source",
]

log = logging.getLogger(__name__)


class CatalogSource(Protocol):
    """One place a catalog is kept; `name` is how messages and `Catalog.source` call it."""

    @property
    def name(self) -> str: ...

    def version(self) -> str: ...

    def read(self) -> tuple[str, str]: ...


@dataclass(frozen=True)
class FileSource:
    path: str

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    def version(self) -> str:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError as exc:
            raise NotFound(f"{self.name} does not exist.") from exc
        except OSError as exc:
            raise TransientError(f"Cannot look at {self.name}: {exc.strerror}.") from exc
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def read(self) -> tuple[str, str]:
        # The version first: a write between the two is then seen again at the next poll.
        version = self.version()
        try:
            with open(self.path, "rb") as stream:
                data = stream.read(MAX_CATALOG_BYTES + 1)
        except OSError as exc:
            raise TransientError(f"Cannot read {self.name}: {exc.strerror}.") from exc
        return _decode(data, self.name), version


@dataclass(frozen=True)
class ConfigMapSource:
    reader: ConfigMapReader
    namespace: str
    config_map: str
    key: str | None

    @property
    def name(self) -> str:
        tail = f"/{self.key}" if self.key else ""
        return f"configmap:{self.namespace}/{self.config_map}{tail}"

    def version(self) -> str:
        # A ConfigMap is read whole anyway (there is no cheaper look); reading is the version.
        return self.read()[1]

    def read(self) -> tuple[str, str]:
        return self.reader.read(self.namespace, self.config_map, self.key)


@dataclass(frozen=True)
class S3Source:
    reader: ObjectReader
    bucket: str
    object_name: str

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.object_name}"

    def version(self) -> str:
        return self.reader.etag(self.bucket, self.object_name)

    def read(self) -> tuple[str, str]:
        data, etag = self.reader.read(self.bucket, self.object_name, max_bytes=MAX_CATALOG_BYTES)
        return _decode(data, self.name), etag


def _decode(data: bytes, name: str) -> str:
    try:
        return decode_catalog(data, source=name)
    except CatalogInvalid as exc:
        raise CatalogError(exc.source, exc.line, exc.reason) from exc


def open_source(
    spec: str, client: ClientConfig, *, kube_api: Any = None, minio: Any = None
) -> CatalogSource:
    """The source `spec` (settings.catalog) names; ConfigError when it names none."""
    kind, _, rest = spec.partition(":")
    if kind == "file" and rest:
        return FileSource(rest)
    if kind == "configmap":
        parts = rest.split("/")
        if len(parts) in (2, 3) and all(parts):
            reader = ConfigMapReader(kube_api if kube_api is not None else kube_api_client())
            return ConfigMapSource(
                reader, parts[0], parts[1], parts[2] if len(parts) == 3 else None
            )
    if kind == "s3":
        bucket, _, name = rest.removeprefix("//").partition("/")
        if rest.startswith("//") and bucket and name:
            return S3Source(ObjectReader(client, minio), bucket, name)
    raise ConfigError(
        [
            f"MSTC_FLOW_CATALOG: {spec!r} names no catalog; write file:PATH, "
            "configmap:NAMESPACE/NAME[/KEY] or s3://BUCKET/OBJECT"
        ]
    )


class CatalogKeeper:
    """Keeps the active catalog: polls its source, takes valid new versions, refuses others."""

    def __init__(
        self,
        source: CatalogSource,
        on_change: Callable[[Catalog], None],
        *,
        poll_seconds: float,
    ) -> None:
        self.source = source
        self._on_change = on_change
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._seen_version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: Catalog | None = None
        self.loaded_at: datetime | None = None
        self.last_problem: FlowError | None = None

    @property
    def last_error(self) -> str | None:
        """Why the newest version is not active (refused or unreadable), or None."""
        return None if self.last_problem is None else str(self.last_problem)

    def check(self) -> bool:
        """One poll: read and take the catalog if its version changed. True if one was taken."""
        return self._load(force=False)

    def reload_now(self) -> bool:
        """Read and take the catalog now, whatever its version (the refresh topic)."""
        return self._load(force=True)

    def start(self) -> None:
        """Load once now, then poll in a background thread until `stop()`."""
        self.check()
        self._thread = threading.Thread(target=self._poll, name="catalog-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            self.check()

    def _load(self, *, force: bool) -> bool:
        with self._lock:
            try:
                if not force and self.source.version() == self._seen_version:
                    return False
                text, version = self.source.read()
                catalog = self._parse(text, version)
                if self.current is not None and catalog.digest == self.current.digest:
                    self._taken(self.current, version)
                    return False
                self._apply(catalog)
                self._taken(catalog, version)
                return True
            except FlowError as exc:
                self._refused(exc)
                return False

    def _apply(self, catalog: Catalog) -> None:
        try:
            self._on_change(catalog)
        except FlowError:
            raise
        except Exception as exc:
            # Not taken (the version stays unseen): the next poll offers it again.
            log.exception("catalog %s: applying it failed", catalog.source)
            raise TransientError(f"Applying the catalog {catalog.source} failed: {exc}") from exc

    def _parse(self, text: str, version: str) -> Catalog:
        try:
            return parse_catalog(text, source=self.source.name)
        except CatalogInvalid as exc:
            # Remembered as seen: the same broken version is refused once, not every poll.
            self._seen_version = version
            raise CatalogError(exc.source, exc.line, exc.reason) from exc

    def _taken(self, catalog: Catalog, version: str) -> None:
        if catalog is not self.current:
            log.info("catalog %s: %d entries taken (version %s)", catalog.source,
                     len(catalog.entries), version)  # fmt: skip
            self.loaded_at = datetime.now(UTC)
        self.current, self._seen_version, self.last_problem = catalog, version, None

    def _refused(self, problem: FlowError) -> None:
        kept = "the last good one stays active" if self.current else "no catalog is active"
        if isinstance(problem, CatalogError):
            log.error("catalog refused: %s; %s", problem, kept)
        else:
            log.warning("catalog not read: %s; %s; retrying next poll", problem, kept)
        self.last_problem = problem
