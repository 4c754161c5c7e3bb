"""An S3 (or S3-compatible) prefix as a DICOM source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
from pydantic import field_validator

from ml.atomic import atomic_path
from resources.sources_base import (
    ForeignItemError,
    OpenLocalMixin,
    SourceError,
    SourceItem,
    SourceItemChangedError,
    SourceItemNotFoundError,
    glob_regex,
    safe_join,
)

CHUNK_BYTES = 1 << 20


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; other URIs raise ``ForeignItemError``."""
    parts = urlparse(uri)
    key = parts.path.removeprefix("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ForeignItemError(f"not an s3://bucket/key URI: {uri!r}")
    return parts.netloc, key


class S3PrefixSource(OpenLocalMixin, dg.ConfigurableResource):
    """Objects under ``s3://bucket/prefix`` whose key after the prefix (leading ``/`` removed)
    matches ``pattern`` (default: all). Folder-marker keys ending in ``/`` are skipped.

    Credentials come from boto3's default chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    profile, instance role). ``uri`` is ``s3://bucket/key``; ``version`` is the ETag (no quotes);
    ``fetch`` downloads with ``If-Match`` so the file is exactly the listed version.
    """

    bucket: str
    prefix: str = ""
    pattern: str = "**"
    endpoint_url: str | None = None
    region_name: str | None = None

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        glob_regex(value)
        return value

    def _client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region_name
        )

    def list_items(self) -> list[SourceItem]:
        """List the matching objects (paginated), sorted by URI."""
        from botocore.exceptions import BotoCoreError, ClientError

        matches = glob_regex(self.pattern).fullmatch
        pages = self._client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        items = []
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") or not matches(key[len(self.prefix):].lstrip("/")):
                        continue
                    uri, etag = f"s3://{self.bucket}/{key}", obj["ETag"].strip('"')
                    items.append(SourceItem(uri, obj["Size"], etag))
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc
        return sorted(items, key=lambda item: item.uri)

    def fetch(self, item: SourceItem, dest_dir: str | os.PathLike[str]) -> Path:
        """Download the listed version to ``dest_dir/<bucket>/<key>`` (atomically); return it."""
        from botocore.exceptions import ClientError

        bucket, key = parse_s3_uri(item.uri)
        if bucket != self.bucket or not key.startswith(self.prefix):
            raise ForeignItemError(f"{item.uri} is not under s3://{self.bucket}/{self.prefix}")
        target = safe_join(Path(dest_dir), [bucket, *key.split("/")])
        try:
            response = self._client().get_object(
                Bucket=bucket, Key=key, IfMatch=f'"{item.version}"'
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412"):
                raise SourceItemChangedError(f"{item.uri} changed since it was listed") from exc
            if code in ("NoSuchKey", "404"):
                raise SourceItemNotFoundError(f"{item.uri} no longer exists") from exc
            raise SourceError(f"cannot download {item.uri}: {exc}") from exc
        body, written = response["Body"], 0
        try:
            with atomic_path(target) as tmp:
                with tmp.open("wb") as handle:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        handle.write(chunk)
                        written += len(chunk)
                if item.size is not None and written != item.size:
                    raise SourceItemChangedError(
                        f"{item.uri}: got {written} bytes, listed {item.size}"
                    )
        finally:
            body.close()
        return target
