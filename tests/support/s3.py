"""Reading an object back from MinIO in tests, with the response always released."""

from __future__ import annotations

from minio import Minio


def read_object(s3: Minio, bucket: str, name: str) -> bytes:
    resp = s3.get_object(bucket, name)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()
