"""DICOM sources for ingestion: a landing folder, an S3 prefix, or a PACS over DICOMweb.

Every source lists ``SourceItem``s (stable ``uri`` + content ``version``) and fetches one item to
a local file holding exactly the listed version. ``dicom_source_from_uri`` builds one from a
single setting::

    /data/landing  or  file:///data/landing   -> FolderSource
    s3://bucket/prefix                          -> S3PrefixSource
    dicomweb+http://host:8042/dicom-web         -> DicomWebSource (also dicomweb+https)
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from resources.sources_base import (
    DicomSource,
    ForeignItemError,
    SourceConfigError,
    SourceError,
    SourceItem,
    SourceItemChangedError,
    SourceItemNotFoundError,
)
from resources.sources_dicomweb import DicomWebError, DicomWebSource, StowError, store_instances
from resources.sources_folder import FolderSource
from resources.sources_multipart import MultipartError
from resources.sources_s3 import S3PrefixSource

__all__ = [
    "DicomSource",
    "DicomWebError",
    "DicomWebSource",
    "FolderSource",
    "ForeignItemError",
    "MultipartError",
    "S3PrefixSource",
    "SourceConfigError",
    "SourceError",
    "SourceItem",
    "SourceItemChangedError",
    "SourceItemNotFoundError",
    "StowError",
    "dicom_source_from_uri",
    "store_instances",
]

SCHEMES = ("file", "s3", "dicomweb+http", "dicomweb+https")


def _build(cls: type, fields: dict[str, Any], options: dict[str, Any]) -> DicomSource:
    """Instantiate ``cls`` after checking ``options`` names against its fields ("did you mean")."""
    known = set(cls.model_fields)
    for name in options:
        if name not in known or name in fields:
            close = difflib.get_close_matches(name, sorted(known - set(fields)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SourceConfigError(f"{cls.__name__} has no option {name!r} for a URI source{hint}")
    try:
        return cls(**fields, **options)
    except ValidationError as exc:
        raise SourceConfigError(f"invalid {cls.__name__} settings: {exc}") from exc


def dicom_source_from_uri(uri: str, **options: Any) -> DicomSource:
    """Build the source a URI names; ``options`` set the other fields (e.g. ``endpoint_url``,
    ``username``/``password``, ``study_date_from``). Credentials are refused inside the URI."""
    parts = urlparse(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        if scheme == "file" and parts.netloc not in ("", "localhost"):
            raise SourceConfigError(f"file URIs must be local (file:///path), got {uri!r}")
        path = unquote(parts.path) if scheme == "file" else uri
        if not path:
            raise SourceConfigError("empty folder path")
        return _build(FolderSource, {"root": path}, options)
    if parts.username is not None or parts.password is not None:
        raise SourceConfigError("put credentials in options or the environment, not in the URI")
    if scheme == "s3":
        if not parts.netloc:
            raise SourceConfigError(f"s3 URI without a bucket: {uri!r}")
        fields = {"bucket": parts.netloc, "prefix": parts.path.lstrip("/")}
        return _build(S3PrefixSource, fields, options)
    if scheme in ("dicomweb+http", "dicomweb+https"):
        if not parts.netloc:
            raise SourceConfigError(f"DICOMweb URI without a host: {uri!r}")
        url = parts._replace(scheme=scheme.removeprefix("dicomweb+")).geturl()
        return _build(DicomWebSource, {"url": url}, options)
    close = difflib.get_close_matches(scheme, SCHEMES, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SourceConfigError(
        f"unsupported source URI scheme {scheme!r} (expected one of {SCHEMES}){hint}"
    )
