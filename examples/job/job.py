"""The example MSTC job: sort every text file of a run, and say what was done.

What seed 001's test image did, for real. The worker gives a Job these variables:

- MINIO_SERVICE_HOST, MINIO_SERVICE_PORT, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD: the object store;
  the key is the Job's own temporary one, which needs AWS_SESSION_TOKEN too (absent only when
  the operator gives Jobs the root key, MSTC_JOB_ROOT_CREDENTIALS);
- INPUT_BUCKET / OUTPUT_BUCKET (or the older INPUT_BUCKET_URL / OUTPUT_BUCKET_URL, whose path
  is the bucket), the output defaulting to the input bucket;
- FILE_PREFIX: the object-name prefix of this run's inputs and outputs (optional).

For each input object under the prefix, the job writes ``<name>.sorted`` (its lines, sorted)
to the output bucket, then ``<prefix>-summary.json`` (``summary.json`` without a prefix), and
prints SUCCESS as its last line. Anything wrong ends it with FAILURE: <reason> and exit code 1,
which the worker reports as a failed Job. Objects this job or the worker wrote earlier (sorted
files, summaries, logs) are not inputs, so a run can share its bucket with its outputs.

The Job's key may read only the input bucket under the prefix and write only the output bucket
under the prefix: so the job lists (with the prefix) rather than asking whether a bucket exists,
and creates the output bucket rather than looking it up.

Only the `minio` package is needed.
"""

# ruff: noqa: T201 - a job reports to its log, which is its standard output

from __future__ import annotations

import io
import json
import os
import sys
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

SORTED_SUFFIX = ".sorted"


class JobError(Exception):
    """A problem the job reports as FAILURE."""


def bucket_from(env: dict[str, str], name: str) -> str | None:
    """The bucket named by NAME, or by the path of NAME_URL (seed 001's form)."""
    if env.get(name):
        return env[name]
    url = env.get(f"{name}_URL")
    if url:
        bucket = urlsplit(url).path.strip("/").split("/")[0]
        if bucket:
            return bucket
    return None


def summary_name(prefix: str) -> str:
    # Named like the worker's log (<prefix>-<job>.log), so a client finds both the same way.
    return f"{prefix}-summary.json" if prefix else "summary.json"


def is_output(name: str, prefix: str) -> bool:
    return name.endswith((SORTED_SUFFIX, ".log")) or name == summary_name(prefix)


def sort_text(data: bytes) -> bytes | None:
    """The lines of a UTF-8 text, sorted; None for anything that is not text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return "".join(line + "\n" for line in sorted(text.splitlines())).encode()


def make_bucket(s3: Minio, bucket: str) -> None:
    """Create `bucket` unless it exists (a Job's key may create it, not look it up)."""
    try:
        s3.make_bucket(bucket)
    except S3Error as exc:
        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def run(env: dict[str, str]) -> dict[str, object]:
    for name in ("MINIO_SERVICE_HOST", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        if not env.get(name):
            raise JobError(f"{name} is not set")
    source = bucket_from(env, "INPUT_BUCKET")
    if source is None:
        raise JobError("neither INPUT_BUCKET nor INPUT_BUCKET_URL is set")
    target = bucket_from(env, "OUTPUT_BUCKET") or source
    prefix = env.get("FILE_PREFIX", "")
    endpoint = f"{env['MINIO_SERVICE_HOST']}:{env.get('MINIO_SERVICE_PORT') or '9000'}"
    s3 = Minio(
        endpoint,
        access_key=env["MINIO_ROOT_USER"],
        secret_key=env["MINIO_ROOT_PASSWORD"],
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        secure=False,
    )
    try:
        names = sorted(
            obj.object_name
            for obj in s3.list_objects(source, prefix=prefix, recursive=True)
            if obj.object_name and not obj.is_dir and not is_output(obj.object_name, prefix)
        )
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise JobError(f"input bucket {source!r} does not exist") from exc
        raise
    make_bucket(s3, target)
    if not names:
        raise JobError(f"no input objects under prefix {prefix!r} in bucket {source!r}")

    sorted_files: list[dict[str, object]] = []
    skipped: list[str] = []
    for name in names:
        response = s3.get_object(source, name)
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
        result = sort_text(data)
        if result is None:
            print(f"skipped {name}: not UTF-8 text")
            skipped.append(name)
            continue
        output = name + SORTED_SUFFIX
        s3.put_object(target, output, io.BytesIO(result), len(result), content_type="text/plain")
        lines = result.count(b"\n")
        print(f"sorted {source}/{name} ({lines} lines) -> {target}/{output}")
        sorted_files.append({"input": name, "output": output, "lines": lines, "bytes": len(data)})

    summary: dict[str, object] = {
        "inputBucket": source,
        "outputBucket": target,
        "prefix": prefix,
        "sorted": sorted_files,
        "skipped": skipped,
    }
    body = json.dumps(summary, indent=2).encode()
    s3.put_object(
        target, summary_name(prefix), io.BytesIO(body), len(body), content_type="application/json"
    )
    print(f"wrote {target}/{summary_name(prefix)}")
    return summary


def main() -> int:
    try:
        run(dict(os.environ))
    except JobError as exc:
        print(f"FAILURE: {exc}")
        return 1
    except Exception as exc:  # a failed upload or download: say what, as the last line
        print(f"FAILURE: {type(exc).__name__}: {exc}")
        return 1
    print("SUCCESS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
