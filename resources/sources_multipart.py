"""Streaming ``multipart/related`` for DICOMweb: a file-backed request body (STOW-RS) and a
single-part response reader (WADO-RS) that never hold a whole DICOM file in memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO

from resources.sources_base import SourceError

BLOCK_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 * 1024


class MultipartError(SourceError):
    """A ``multipart/related`` body is malformed, truncated or has an unexpected number of parts."""


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Return the lower-case media type and the parameters of a Content-Type header value."""
    msg = EmailMessage()
    msg["Content-Type"] = value
    header = msg["Content-Type"]
    return header.content_type, {k.lower(): v for k, v in header.params.items()}


class MultipartBody:
    """A ``multipart/related`` body built from files, read block by block.

    It has ``__len__`` (so ``requests`` sends a Content-Length rather than chunked encoding,
    which not every PACS accepts) and ``read``/``__iter__`` (so the files are streamed).
    """

    def __init__(self, paths: Sequence[Path], boundary: str, part_type: str) -> None:
        self._paths = [Path(p) for p in paths]
        self._sizes = [p.stat().st_size for p in self._paths]
        self._head = f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        self._tail = f"--{boundary}--\r\n".encode()
        self._length = sum(len(self._head) + size + 2 for size in self._sizes) + len(self._tail)
        self._blocks = self._generate()
        self._pending = b""

    def __len__(self) -> int:
        return self._length

    def _generate(self) -> Iterator[bytes]:
        for path, size in zip(self._paths, self._sizes):
            yield self._head
            sent = 0
            with path.open("rb") as handle:
                while block := handle.read(BLOCK_BYTES):
                    sent += len(block)
                    yield block
            if sent != size:
                raise MultipartError(f"{path} changed size while being sent ({size} -> {sent})")
            yield b"\r\n"
        yield self._tail

    def read(self, size: int | None = -1) -> bytes:
        """Return up to ``size`` bytes (all the rest when ``size`` is negative or None)."""
        if size is None or size < 0:
            out = self._pending + b"".join(self._blocks)
            self._pending = b""
            return out
        while len(self._pending) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._pending += block
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(BLOCK_BYTES):
            yield block


class _Buffer:
    """A byte buffer refilled from an iterator of chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.data = bytearray()
        self._chunks = iter(chunks)

    def fill(self) -> None:
        for chunk in self._chunks:
            if chunk:
                self.data += chunk
                return
        raise MultipartError("multipart body ended early")

    def until(self, marker: bytes, limit: int) -> int:
        """Index of ``marker`` in the buffer, reading more as needed (at most ``limit`` bytes)."""
        while (index := self.data.find(marker)) < 0:
            if len(self.data) > limit:
                raise MultipartError(f"no {marker!r} within {limit} bytes")
            self.fill()
        return index


def write_single_part(chunks: Iterable[bytes], boundary: str, out: BinaryIO) -> dict[str, str]:
    """Write the body of the only part of a ``multipart/related`` stream to ``out``.

    Returns the part's headers (lower-case names). Raises ``MultipartError`` when the stream is
    truncated, malformed, or holds zero or several parts.
    """
    delimiter = b"--" + boundary.encode()
    buf = _Buffer(chunks)
    start = buf.until(delimiter, MAX_HEADER_BYTES)
    del buf.data[: start + len(delimiter)]
    line_end = buf.until(b"\r\n", MAX_HEADER_BYTES)
    if bytes(buf.data[:line_end]).startswith(b"--"):
        raise MultipartError("multipart body has no parts")
    del buf.data[: line_end + 2]
    headers: dict[str, str] = {}
    while (line_end := buf.until(b"\r\n", MAX_HEADER_BYTES)) > 0:
        name, _, value = bytes(buf.data[:line_end]).decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
        del buf.data[: line_end + 2]
    del buf.data[:2]
    end = b"\r\n" + delimiter
    while (index := buf.data.find(end)) < 0:
        keep = len(end) - 1
        if len(buf.data) > keep:
            out.write(buf.data[:-keep])
            del buf.data[:-keep]
        buf.fill()
    out.write(buf.data[:index])
    del buf.data[: index + len(end)]
    while len(buf.data) < 2:
        buf.fill()
    if buf.data[:2] != b"--":
        raise MultipartError("expected exactly one part, the body has more")
    return headers
