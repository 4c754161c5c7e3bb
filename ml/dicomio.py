"""DICOM I/O for tomosynthesis: header reads, frame-level decoding, Duke-compatible loaders.

Two layers:

- A general loader: :func:`read_header` (no pixel data), :func:`read_frames` (decodes
  only the frames asked for, through a :mod:`ml.decoders` backend: pydicom on the CPU, in
  several processes when asked since the decoders hold the GIL, or nvImageCodec on a GPU),
  :func:`frame_codestreams` (a frame's encapsulated bytes, undecoded) and
  :func:`load_view` (presentation image in ``[0, 1]``, windowed from the
  functional groups or top-level tags, MONOCHROME1 inverted, oriented into the Duke
  frame with the laterality decision recorded).
- The Duke BCS-DBT reference semantics, bit for bit: :func:`dcmread_image`,
  :func:`read_boxes`, :func:`draw_box`.

Every failure is a :class:`DicomError` subclass with a message that says what is wrong.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ml.laterality import Orientation, decide_orientation, tag_laterality, tag_view
from ml.slicing import FrameStrategy, frame_indices
from ml.voi import Window, first_value, functional_group_item, to_presentation

if TYPE_CHECKING:
    from ml.decoders import FrameDecoder

PathOrFile = str | os.PathLike[str] | IO[bytes]

BTO_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.13.1.3"
MG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1")
DEFAULT_SOP_CLASSES: tuple[str, ...] = (BTO_SOP_CLASS, *MG_SOP_CLASSES)
# SOP classes vendors use to hide tomosynthesis, with the reason they are refused.
KNOWN_REJECTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture (proprietary tomosynthesis payload)",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage (tomosynthesis archived as CT)",
}
# Transfer syntax -> pydicom decoding plugin (None: pydicom's own or not compressed).
SUPPORTED_TRANSFER_SYNTAXES: dict[str, str | None] = {
    "1.2.840.10008.1.2": None,  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": None,  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": None,  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.5": None,  # RLE Lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg",  # JPEG 2000 lossless (openjpeg, bit-exact with Duke)
    "1.2.840.10008.1.2.4.91": "pylibjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS lossless (4x faster than libjpeg)
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS near-lossless
}
DEFAULT_MAX_VOLUME_BYTES = 8 * 1024**3  # a 125-frame 2457x1996 Duke volume is 1.2 GB


class DicomError(Exception):
    """Base class of every DICOM input problem; ``reason`` is a short machine-readable code."""

    reason = "dicom_error"

    def __init__(self, source: object, detail: str) -> None:
        self.source = str(source)
        self.detail = detail
        super().__init__(f"{self.source}: {detail}")


class NotDicomError(DicomError):
    reason = "not_dicom"


class TruncatedDicomError(DicomError):
    reason = "truncated"


class NoPixelDataError(DicomError):
    reason = "no_pixel_data"


class UnsupportedSopClassError(DicomError):
    reason = "unsupported_sop_class"


class UnsupportedTransferSyntaxError(DicomError):
    reason = "unsupported_transfer_syntax"


class CorruptCodestreamError(DicomError):
    reason = "corrupt_codestream"


class FrameCountMismatchError(DicomError):
    reason = "frame_count_mismatch"


class VolumeTooLargeError(DicomError):
    reason = "volume_too_large"


class MissingWindowError(DicomError):
    reason = "missing_window"


def _source_name(fp: PathOrFile) -> str:
    if isinstance(fp, (str, os.PathLike)):
        return os.fspath(fp)
    return str(getattr(fp, "name", "<file object>"))


def _parse_da(value: object) -> date | None:
    text = str(value or "").strip()
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DbtHeader:
    """What a loader needs to know about a file before decoding anything."""

    source: str
    sop_class_uid: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    frames: int
    bits_allocated: int
    bits_stored: int
    samples_per_pixel: int
    photometric: str
    manufacturer: str | None
    model: str | None
    study_date: date | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    patient_id: str | None
    laterality: str | None  # from tags; None when no tag says L or R
    laterality_source: str | None
    view: str | None  # "CC", "MLO" or None
    has_fg_window: bool
    dataset: Dataset = field(repr=False, compare=False)

    @property
    def volume_bytes(self) -> int:
        """Bytes of the decoded volume at its stored sample size."""
        return self.rows * self.columns * self.frames * self.samples_per_pixel * (self.bits_allocated // 8)

    def log_fields(self) -> dict[str, Any]:
        """Per-file facts worth logging: vendor, codec, depth; no patient information."""
        return {
            "Manufacturer": self.manufacturer,
            "ManufacturerModelName": self.model,
            "SOPClassUID": self.sop_class_uid,
            "TransferSyntaxUID": self.transfer_syntax_uid,
            "BitsStored": self.bits_stored,
            "PhotometricInterpretation": self.photometric,
            "FrameVOILUT": self.has_fg_window,
            "Frames": self.frames,
            "Rows": self.rows,
            "Columns": self.columns,
        }


def read_header(
    fp: PathOrFile,
    *,
    sop_classes: Sequence[str] | None = DEFAULT_SOP_CLASSES,
    max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES,
    check_pixel_data: bool = True,
) -> DbtHeader:
    """Read and check everything but the pixel values.

    ``sop_classes`` restricts the accepted SOP classes (None accepts any image).
    ``max_volume_bytes`` refuses, before any allocation, a header whose
    Rows x Columns x Frames would not fit.  ``check_pixel_data`` walks the Pixel
    Data element headers (no values read) to detect truncation and frame-count
    mismatches.
    """
    name = _source_name(fp)
    handle, close = (open(fp, "rb"), True) if isinstance(fp, (str, os.PathLike)) else (fp, False)
    try:
        try:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        except InvalidDicomError as exc:
            raise NotDicomError(name, f"not a DICOM file ({exc})") from exc
        except (EOFError, struct.error, OverflowError) as exc:
            raise TruncatedDicomError(name, f"file ends inside the header ({exc})") from exc
        except OSError as exc:
            raise TruncatedDicomError(name, f"cannot read the header ({exc})") from exc
        header = _header_from_dataset(name, ds, sop_classes, max_volume_bytes)
        if check_pixel_data:
            _check_pixel_data(name, handle, header)
        return header
    finally:
        if close:
            handle.close()


def _header_from_dataset(
    name: str, ds: Dataset, sop_classes: Sequence[str] | None, max_volume_bytes: int
) -> DbtHeader:
    meta = getattr(ds, "file_meta", Dataset())
    tsyntax = str(meta.get("TransferSyntaxUID", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", "") or "")
    if not tsyntax:
        raise NotDicomError(name, "no Transfer Syntax UID in the file meta information")
    if "Rows" not in ds or "Columns" not in ds:
        raise NoPixelDataError(name, "no image: Rows/Columns are missing")
    if sop_classes is not None and sop_class not in sop_classes:
        known = KNOWN_REJECTED_SOP_CLASSES.get(sop_class)
        label = f"{sop_class} ({known})" if known else f"{sop_class or 'missing'} ({UID(sop_class).name or 'unknown'})"
        raise UnsupportedSopClassError(name, f"SOP class {label} is not accepted; expected one of {list(sop_classes)}")
    if tsyntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntaxError(
            name, f"transfer syntax {tsyntax} ({UID(tsyntax).name}) has no installed decoder here"
        )
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise FrameCountMismatchError(name, f"NumberOfFrames {ds.get('NumberOfFrames')!r} is not a number") from exc
    rows, columns = int(ds.Rows), int(ds.Columns)
    bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if min(rows, columns, frames) < 1:
        raise NoPixelDataError(name, f"empty geometry: {rows} rows x {columns} columns x {frames} frames")
    size = rows * columns * frames * samples * max(bits_allocated // 8, 1)
    if size > max_volume_bytes:
        raise VolumeTooLargeError(
            name,
            f"{rows} rows x {columns} columns x {frames} frames x {bits_allocated} bits = {size:,} bytes "
            f"exceeds the limit of {max_volume_bytes:,} bytes; refusing to decode",
        )
    side = tag_laterality(ds)
    return DbtHeader(
        source=name,
        sop_class_uid=sop_class,
        transfer_syntax_uid=tsyntax,
        rows=rows,
        columns=columns,
        frames=frames,
        bits_allocated=bits_allocated,
        bits_stored=int(ds.get("BitsStored", bits_allocated) or bits_allocated),
        samples_per_pixel=samples,
        photometric=str(ds.get("PhotometricInterpretation", "") or ""),
        manufacturer=str(ds.get("Manufacturer")) if ds.get("Manufacturer") else None,
        model=str(ds.get("ManufacturerModelName")) if ds.get("ManufacturerModelName") else None,
        study_date=_parse_da(ds.get("StudyDate")),
        study_instance_uid=str(ds.get("StudyInstanceUID")) if ds.get("StudyInstanceUID") else None,
        series_instance_uid=str(ds.get("SeriesInstanceUID")) if ds.get("SeriesInstanceUID") else None,
        sop_instance_uid=str(ds.get("SOPInstanceUID")) if ds.get("SOPInstanceUID") else None,
        patient_id=str(ds.get("PatientID")) if ds.get("PatientID") else None,
        laterality=side[0] if side else None,
        laterality_source=side[1] if side else None,
        view=tag_view(ds),
        has_fg_window=functional_group_item(ds, 0, "FrameVOILUTSequence") is not None,
        dataset=ds,
    )


def _pixel_data_length(name: str, handle: IO[bytes], tsyntax: UID) -> int:
    """Read the Pixel Data element header that follows ``dcmread(stop_before_pixels=True)``.

    Leaves ``handle`` at the start of the value and returns the declared length
    (``0xFFFFFFFF`` for encapsulated data).
    """
    end = "<" if tsyntax.is_little_endian else ">"
    tag = handle.read(4)
    if len(tag) < 4:
        raise NoPixelDataError(name, "the file has no Pixel Data element")
    group, elem = struct.unpack(f"{end}HH", tag)
    if (group, elem) != (0x7FE0, 0x0010):
        raise NoPixelDataError(name, f"the file has no Pixel Data element (found ({group:04X},{elem:04X}))")
    if tsyntax.is_implicit_VR:
        raw_length = handle.read(4)
    else:
        handle.read(4)  # VR + reserved
        raw_length = handle.read(4)
    if len(raw_length) < 4:
        raise TruncatedDicomError(name, "file ends inside the Pixel Data element header")
    (length,) = struct.unpack(f"{end}L", raw_length)
    return int(length)


def _check_pixel_data(name: str, handle: IO[bytes], header: DbtHeader) -> None:
    """Walk the Pixel Data element (headers only) after ``dcmread(stop_before_pixels=True)``."""
    tsyntax = UID(header.transfer_syntax_uid)
    end = "<" if tsyntax.is_little_endian else ">"
    start = handle.tell()
    file_size = handle.seek(0, os.SEEK_END)
    handle.seek(start)
    length = _pixel_data_length(name, handle, tsyntax)
    value_start = handle.tell()
    if length != 0xFFFFFFFF:
        expected = header.volume_bytes
        if value_start + length > file_size:
            raise TruncatedDicomError(
                name, f"Pixel Data declares {length:,} bytes but the file ends after {file_size - value_start:,}"
            )
        if length < expected:
            held = length // max(expected // header.frames, 1)
            raise FrameCountMismatchError(
                name, f"NumberOfFrames is {header.frames} but Pixel Data holds {length:,} bytes ({held} frames)"
            )
        return
    offsets, fragments = _walk_fragments(name, handle, file_size, end)
    handle.seek(start)
    if offsets and len(offsets) != header.frames:
        raise FrameCountMismatchError(
            name, f"NumberOfFrames is {header.frames} but the Basic Offset Table lists {len(offsets)} frames"
        )
    if len(fragments) < header.frames:
        raise FrameCountMismatchError(
            name, f"NumberOfFrames is {header.frames} but Pixel Data holds {len(fragments)} fragments"
        )


Fragment = tuple[int, int]
"""``(file position of the value, length)`` of one encapsulated Pixel Data fragment."""


def _walk_fragments(
    name: str, handle: IO[bytes], file_size: int, end: str
) -> tuple[list[int], list[Fragment]]:
    """Return (basic offset table, fragments) of encapsulated Pixel Data, seeking past values."""
    offsets: list[int] = []
    fragments: list[Fragment] = []
    first = True
    while True:
        item = handle.read(8)
        if len(item) < 8:
            raise TruncatedDicomError(name, "encapsulated Pixel Data ends without a sequence delimiter")
        group, elem, length = struct.unpack(f"{end}HHL", item)
        if (group, elem) == (0xFFFE, 0xE0DD):
            if first:
                raise CorruptCodestreamError(name, "encapsulated Pixel Data has no Basic Offset Table item")
            return offsets, fragments
        if (group, elem) != (0xFFFE, 0xE000):
            raise CorruptCodestreamError(name, f"unexpected tag ({group:04X},{elem:04X}) inside Pixel Data")
        position = handle.tell()
        if position + length > file_size:
            raise TruncatedDicomError(
                name, f"Pixel Data fragment of {length:,} bytes runs past the end of the file"
            )
        if first:
            table = handle.read(length)
            offsets = list(struct.unpack(f"{end}{length // 4}L", table)) if length else []
            first = False
        else:
            fragments.append((position, length))
            handle.seek(length, os.SEEK_CUR)


def _group_frames(
    name: str, handle: IO[bytes], offsets: list[int], fragments: list[Fragment], frames: int
) -> list[list[Fragment]]:
    """Split fragments into frames: by the Basic Offset Table, else one fragment per frame,
    else (several fragments per frame, no table) after each fragment that ends a JPEG/JPEG 2000
    codestream (EOC marker ``FFD9``, possibly followed by one padding byte), as pydicom does."""
    if offsets:
        first = fragments[0][0]
        starts = {position - first: k for k, (position, _) in enumerate(fragments)}
        missing = [o for o in offsets if o not in starts]
        if missing:
            raise CorruptCodestreamError(name, f"Basic Offset Table entries {missing[:3]} point at no fragment")
        bounds = [starts[o] for o in offsets] + [len(fragments)]
        return [fragments[a:b] for a, b in zip(bounds, bounds[1:])]
    if len(fragments) == frames:
        return [[fragment] for fragment in fragments]
    if frames == 1:
        return [fragments]
    groups: list[list[Fragment]] = [[]]
    for position, length in fragments:
        groups[-1].append((position, length))
        handle.seek(position + max(length - 3, 0))
        if handle.read(min(length, 3)).rstrip(b"\x00").endswith(b"\xff\xd9"):
            groups.append([])
    groups = [g for g in groups if g]
    if len(groups) < frames:
        raise CorruptCodestreamError(
            name, f"cannot delimit {frames} frames in {len(fragments)} fragments without an offset table"
        )
    return groups


def frame_codestreams(fp: str | os.PathLike[str], header: DbtHeader, indices: Sequence[int]) -> list[bytes]:
    """The encapsulated bytes of frames ``indices`` (each frame's fragments joined), not decoded.

    For JPEG 2000 transfer syntaxes each item is one frame's codestream, as a codec takes it.
    Only the item headers and the requested frames are read.
    """
    name = os.fspath(fp)
    tsyntax = UID(header.transfer_syntax_uid)
    if not tsyntax.is_encapsulated:
        raise UnsupportedTransferSyntaxError(name, f"transfer syntax {tsyntax} ({tsyntax.name}) is not encapsulated")
    with open(name, "rb") as handle:
        pydicom.dcmread(handle, stop_before_pixels=True)
        start = handle.tell()
        file_size = handle.seek(0, os.SEEK_END)
        handle.seek(start)
        if _pixel_data_length(name, handle, tsyntax) != 0xFFFFFFFF:
            raise CorruptCodestreamError(name, "Pixel Data of an encapsulated transfer syntax has a defined length")
        end = "<" if tsyntax.is_little_endian else ">"
        offsets, fragments = _walk_fragments(name, handle, file_size, end)
        groups = _group_frames(name, handle, offsets, fragments, header.frames)
        out = []
        for index in indices:
            if not 0 <= index < min(header.frames, len(groups)):
                raise IndexError(f"{name}: frame index {index} outside 0..{header.frames - 1}")
            parts = []
            for position, length in groups[index]:
                handle.seek(position)
                parts.append(handle.read(length))
            out.append(b"".join(parts))
        return out


def read_frames(
    fp: str | os.PathLike[str],
    indices: Sequence[int] | None = None,
    *,
    header: DbtHeader | None = None,
    workers: int = 1,
    mp_context: str = "spawn",
    sop_classes: Sequence[str] | None = DEFAULT_SOP_CLASSES,
    max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES,
    decoder: FrameDecoder | str | None = None,
) -> np.ndarray:
    """Decode only the frames ``indices`` (all when None) as raw stored values ``(k, rows, cols)``.

    Values are not masked to BitsStored and not windowed; they equal pydicom's raw output
    whichever decoder runs.  ``decoder`` is a :class:`ml.decoders.FrameDecoder` or one of
    ``"auto"``, ``"cpu"``, ``"gpu"`` (see :func:`ml.decoders.select_decoder`); None reads
    the ``TOMOSIGHT_DECODER`` environment variable and defaults to ``"cpu"``.  With
    ``workers > 1`` CPU decoding splits the frames into contiguous chunks decoded in that
    many processes; the GPU decoder batches them on the device instead.
    """
    from ml.decoders import resolve_decoder  # imported here: ml.decoders builds on this module

    name = os.fspath(fp)
    header = header or read_header(name, sop_classes=sop_classes, max_volume_bytes=max_volume_bytes)
    wanted = list(range(header.frames)) if indices is None else [int(i) for i in indices]
    bad = [i for i in wanted if not 0 <= i < header.frames]
    if bad:
        raise IndexError(f"{name}: frame indices {bad} outside 0..{header.frames - 1}")
    if not wanted:
        return np.empty((0, header.rows, header.columns), dtype=np.uint16)
    frame_decoder = resolve_decoder(decoder)
    try:
        out = frame_decoder.decode(name, header, wanted, workers=workers, mp_context=mp_context)
    except DicomError:
        raise
    except Exception as exc:  # decoders raise RuntimeError/ValueError/etc. on bad codestreams
        raise CorruptCodestreamError(name, f"cannot decode frames {wanted[:5]}...: {exc}") from exc
    if out.ndim != 3 or out.shape[1:] != (header.rows, header.columns):
        raise CorruptCodestreamError(
            name, f"decoded shape {out.shape[1:]} does not match Rows x Columns {header.rows} x {header.columns}"
        )
    return out


@dataclass(frozen=True)
class ViewImage:
    """Frames of one view as float32 presentation images in ``[0, 1]``, in the Duke frame."""

    pixels: np.ndarray  # (k, rows, cols)
    frame_indices: tuple[int, ...]
    header: DbtHeader
    orientation: Orientation
    window: Window | None


def load_view(
    fp: str | os.PathLike[str],
    frames: FrameStrategy | Sequence[int] = "central",
    *,
    laterality: str | None = None,
    workers: int = 1,
    sop_classes: Sequence[str] | None = DEFAULT_SOP_CLASSES,
    max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES,
    decoder: FrameDecoder | str | None = None,
    **strategy_options: Any,
) -> ViewImage:
    """Read the frames a strategy needs and return them ready for a model.

    ``frames`` is a strategy name from :mod:`ml.slicing` (options such as ``n_slices``
    or ``slab`` pass through) or explicit indices.  ``laterality`` (e.g. from a Duke
    view name) overrides the tags.  Orientation is decided once, on the first decoded
    frame, so all frames of a call are rotated the same way (unlike the reference,
    which decides per call).  ``decoder`` chooses the frame decoder as in :func:`read_frames`.
    """
    header = read_header(fp, sop_classes=sop_classes, max_volume_bytes=max_volume_bytes)
    if isinstance(frames, str):
        indices = frame_indices(header.frames, frames, **strategy_options)
    else:
        indices = [int(i) for i in frames]
    raw = read_frames(fp, indices, header=header, workers=workers, decoder=decoder)
    ds = header.dataset
    images = []
    window = None
    for k, index in enumerate(indices):
        image, used = to_presentation(raw[k], ds, index)
        window = window or used
        images.append(image)
    pixels = np.stack(images)
    orientation = decide_orientation(pixels[0], ds, laterality)
    if orientation.flipped:
        pixels = np.ascontiguousarray(pixels[:, ::-1, ::-1])
    return ViewImage(pixels, tuple(indices), header, orientation, window)


# --------------------------------------------------------------------------------------
# Duke BCS-DBT reference semantics (duke_dbt.md section 3), bit for bit.
# --------------------------------------------------------------------------------------


def duke_window_bounds(ds: Dataset) -> tuple[np.float32, np.float32]:
    """Window bounds as the reference computes them: from the shared group, in float32."""
    try:
        voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
        center, width = voi.WindowCenter, voi.WindowWidth
    except (AttributeError, IndexError, KeyError) as exc:
        raise MissingWindowError(
            _source_name(getattr(ds, "filename", None) or "<dataset>"),
            "no WindowCenter/WindowWidth in SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]",
        ) from exc
    wc = np.float32(first_value(center))
    ww = np.float32(first_value(width))
    two = np.float32(2)
    return (two * wc - ww) / two, (two * wc + ww) / two


def duke_rescale(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """scikit-image 0.17.2 ``rescale_intensity(in_range=(lo, hi), out_range="dtype")`` on uint16."""
    lo64, hi64 = float(lo), float(hi)
    x = np.clip(pixels.astype(np.float64), lo64, hi64)
    if lo64 == hi64:
        return np.clip(x, 0, 65535).astype(np.uint16)
    return (((x - lo64) / (hi64 - lo64)) * 65535.0 + 0.0).astype(np.uint16)


def dcmread_image(fp: PathOrFile, view: str, index: int | None = None) -> np.ndarray:
    """Read a Duke BCS-DBT volume (or one frame) exactly as the reference loader does.

    Output: uint16 ``(frames, rows, cols)``, or ``(rows, cols)`` when ``index`` is given,
    windowed from the shared functional group with truncating scaling to 0..65535 and
    rotated 180 degrees when the pixel laterality (frame ``index or 0``) disagrees with
    ``view[0]``.  Bit-identical to the reference; differences by design:

    - with ``index`` only that frame is decoded (the reference decodes all of them; the
      result is identical because no other frame is used);
    - a multi-valued WindowCenter/WindowWidth uses its first value (the reference fails);
    - problems raise :class:`DicomError` subclasses instead of AttributeError/KeyError.
    """
    name = _source_name(fp)
    header = read_header(fp, sop_classes=None)
    if hasattr(fp, "seek"):
        fp.seek(0)  # type: ignore[union-attr]
    path = name if isinstance(fp, (str, os.PathLike)) else fp
    lo, hi = duke_window_bounds(header.dataset)
    if index is None:
        volume = _decode_all(path, header)
    else:
        if not 0 <= index < header.frames:
            raise IndexError(f"{name}: index {index} outside 0..{header.frames - 1}")
        volume = _decode_all(path, header, index=index)[None]
    image_side = "R" if _column_sum(volume[0], 0) < _column_sum(volume[0], -1) else "L"
    if image_side != view[0].upper():
        volume = volume[:, ::-1, ::-1]
    out = duke_rescale(volume, lo, hi)
    return out[0] if index is not None else out


def _column_sum(frame: np.ndarray, column: int) -> int:
    return int(frame[:, column].sum(dtype=np.int64))


def _decode_all(path: Any, header: DbtHeader, index: int | None = None) -> np.ndarray:
    """Decode the whole volume (or one frame) as ``(frames, rows, cols)`` uint16 / ``(rows, cols)``."""
    plugin = SUPPORTED_TRANSFER_SYNTAXES[header.transfer_syntax_uid]
    options: dict[str, Any] = {"decoding_plugin": plugin} if plugin else {}
    try:
        arr = pydicom.pixels.pixel_array(path, index=index, raw=True, **options)
    except Exception as exc:
        raise CorruptCodestreamError(header.source, f"cannot decode pixel data: {exc}") from exc
    if index is None and arr.ndim == 2:
        arr = arr[None]
    return arr


def read_boxes(boxes_fp: str | os.PathLike[str] | IO[Any], filepaths_fp: str | os.PathLike[str] | IO[Any]):
    """Join Duke boxes with file paths on (PatientID, StudyUID, View): one row per box.

    Returns a pandas DataFrame like the reference (box columns plus ``descriptive_path``
    and ``classic_path``).  Fixed: the reference checked the boxes columns twice, so a
    file-paths CSV without a key column failed later in the merge; here both files are
    checked and a :class:`ValueError` names the file and the missing columns.
    """
    import pandas as pd

    keys = ["PatientID", "StudyUID", "View"]
    boxes = pd.read_csv(boxes_fp)
    paths = pd.read_csv(filepaths_fp)
    for frame, fp in ((boxes, boxes_fp), (paths, filepaths_fp)):
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise ValueError(f"{_source_name(fp)}: missing key column(s) {missing}")
    return pd.merge(boxes, paths, on=keys, how="inner")


def draw_box(
    image: np.ndarray,
    x: int,
    y: int,
    width: int,
    height: int,
    color: Any = None,
    lw: int = 4,
) -> np.ndarray:
    """Paint a box outline of line width ``lw`` into a 2-D slice, in place, and return it.

    Same bands as the reference (each inside the box: top ``[y, y+lw)``, bottom
    ``[y+height-lw, y+height)``, left ``[x, x+lw)``, right ``[x+width-lw, x+width)``),
    same default colour (``image.max()``; a scalar on a multi-channel image paints
    only the first channel).  Fixed reference bugs:

    - the reference clamped only the origin into the image, which shifted boxes that
      start outside it; here the box keeps its place and is clipped to the image;
    - a negative band start (box thinner than ``lw`` at the top/left edge) wrapped
      around to the far side of the image through negative indexing; bands are clipped.
    """
    height_px, width_px = image.shape[:2]
    if color is None:
        color = image.max()
    if image.ndim == 3 and np.ndim(color) == 0:
        color = (color,) + (0,) * (image.shape[2] - 1)
    x, y, width, height = int(x), int(y), int(width), int(height)

    def paint(r0: int, r1: int, c0: int, c1: int) -> None:
        r0, r1 = max(r0, y, 0), min(r1, y + height, height_px)
        c0, c1 = max(c0, x, 0), min(c1, x + width, width_px)
        if r0 < r1 and c0 < c1:
            image[r0:r1, c0:c1] = color

    paint(y, y + lw, x, x + width)
    paint(y + height - lw, y + height, x, x + width)
    paint(y, y + height, x, x + lw)
    paint(y, y + height, x + width - lw, x + width)
    return image
