"""Write Breast Tomosynthesis Image Storage (BTO) DICOM files from a uint16 volume.

The default output follows the recipe that passes ``dciodvfy`` with no errors: multi-frame,
shared functional groups (Pixel Measures, Plane Orientation, Frame VOI LUT, Pixel Value
Transformation, Frame Anatomy with FrameLaterality) and per-frame groups (Frame Content,
Plane Position, X-Ray 3D Frame Type). Vendor quirks can be switched on through ``BtoMeta``;
two of them make the file non-conformant on purpose:

* ``photometric="MONOCHROME1"``: the X-Ray 3D Image module allows MONOCHROME2 only;
* ``frame_laterality=False``: FrameLaterality is type 1 in the Frame Anatomy macro.

Every file also carries planted, synthetic PHI (names, birth date, institution, accession
number, device serial, nested per-frame dates) for de-identification tests.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from ml.atomic import atomic_path
from ml.density import CATEGORIES, composition_item

BTO_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.13.1.3"
UID_ROOT = "1.2.826.0.1.3680043.8.498."
"""Root of every synthetic UID (the root the Duke collection's UIDs sit under)."""

TRANSFER_SYNTAXES: dict[str, UID] = {
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
    "explicit": ExplicitVRLittleEndian,
}
_ENCODING_PLUGINS = {"jpeg2000": "pylibjpeg", "jpegls": "pyjpegls", "rle": "pydicom"}

VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}
BREAST_CODE = ("76752008", "Breast")
_IMAGE_TYPE = ["DERIVED", "PRIMARY", "TOMOSYNTHESIS", "NONE"]


class BtoError(ValueError):
    """Raised for a volume or metadata that cannot be written as a BTO file."""


@dataclass(frozen=True)
class BtoMeta:
    """Identity, geometry, display and vendor-quirk settings of one BTO file.

    ``volume`` given to :func:`write_bto` is always in display sense (bright tissue);
    ``rotated_180`` only tells the writer the pixels are stored rotated 180 degrees
    in-plane, so ImageOrientationPatient is written to match them.
    """

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    study_date: dt.date
    laterality: str  # "L" or "R"
    view: str  # "CC" or "MLO"
    window_center: float | None = 512.0
    window_width: float | None = 1024.0
    photometric: str = "MONOCHROME2"  # or "MONOCHROME1" (pixels stored inverted)
    bits_stored: int = 10
    frame_laterality: bool = True  # False: laterality only in pixels (breaks dciodvfy)
    vendor_extras: bool = False  # ImageLaterality, ViewPosition, PatientOrientation
    windows_per_frame: bool = False  # Frame VOI LUT in each per-frame item
    rotated_180: bool = False
    series_number: int = 1
    study_time: dt.time = dt.time(9, 0, 0)
    pixel_spacing_mm: float = 0.1
    slice_spacing_mm: float = 1.0
    manufacturer: str = "TOMOSIGHT SYNTHETIC"
    model_name: str = "SYNTH-DBT"
    software_version: str = "tomosight-synth 1"
    study_description: str = "breast tomosynthesis screening"
    # Planted synthetic PHI.
    patient_name: str = "SYNTH^PATIENT"
    patient_birth_date: dt.date = dt.date(1960, 1, 1)
    institution_name: str = "SYNTHETIC BREAST CENTER"
    referring_physician_name: str = "SYNTH^REFERRER"
    accession_number: str = "SYNTH0000"
    device_serial_number: str = "SN-SYNTH-0000"
    # BI-RADS breast composition (A-D) in the Acquisition Context; None: not stated.
    breast_composition: str | None = None

    def __post_init__(self) -> None:
        if self.laterality not in ("L", "R"):
            raise BtoError(f"laterality must be 'L' or 'R', got {self.laterality!r}")
        if self.view not in VIEW_CODES:
            raise BtoError(f"view must be one of {sorted(VIEW_CODES)}, got {self.view!r}")
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise BtoError(f"photometric must be MONOCHROME1/2, got {self.photometric!r}")
        if not 8 <= self.bits_stored <= 16:
            raise BtoError(f"bits_stored must be in 8..16, got {self.bits_stored}")
        if (self.window_center is None) != (self.window_width is None):
            raise BtoError("window_center and window_width must both be set or both be None")
        if self.window_width is not None and self.window_width <= 0:
            raise BtoError(f"window_width must be > 0, got {self.window_width}")
        if self.breast_composition not in (None, *CATEGORIES):
            raise BtoError(f"breast_composition must be one of {sorted(CATEGORIES)} or None, got {self.breast_composition!r}")

    @property
    def has_window(self) -> bool:
        """Whether a Frame VOI LUT (window centre/width) is written."""
        return self.window_center is not None


def resolve_transfer_syntax(name: str) -> UID:
    """Map a short transfer-syntax name to its UID, suggesting the nearest name on a typo."""
    if name in TRANSFER_SYNTAXES:
        return TRANSFER_SYNTAXES[name]
    close = difflib.get_close_matches(name, TRANSFER_SYNTAXES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise BtoError(
        f"unknown transfer syntax {name!r}; choose from {sorted(TRANSFER_SYNTAXES)}.{hint}"
    )


def derived_uid(*parts: object) -> str:
    """A deterministic UID under :data:`UID_ROOT` from the given parts."""
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def orientation(laterality: str, view: str, rotated_180: bool = False) -> list[float]:
    """ImageOrientationPatient (LPS) for the standard frame (left chest wall at column 0).

    Rows run from chest wall to nipple (anterior, -y) for a left breast and the other way
    for a right breast; columns run lateral to medial (CC) or head to feet (MLO).
    """
    sign = 1.0 if laterality == "L" else -1.0
    row = [0.0, -sign, 0.0]
    col = [-sign, 0.0, 0.0] if view == "CC" else [0.0, 0.0, -1.0]
    if rotated_180:
        row, col = [-v for v in row], [-v for v in col]
    return [v + 0.0 for v in row + col]  # "+ 0.0" turns -0.0 into 0.0


def _direction_letter(vector: list[float]) -> str:
    """The LPS patient-direction letter of a unit vector's dominant axis."""
    axis = int(np.argmax(np.abs(vector)))
    return ("LR", "PA", "HF")[axis][0 if vector[axis] > 0 else 1]


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _voi_item(meta: BtoMeta) -> Dataset:
    voi = Dataset()
    voi.WindowCenter = f"{meta.window_center:g}"
    voi.WindowWidth = f"{meta.window_width:g}"
    voi.VOILUTFunction = "LINEAR"
    return voi


def _shared_group(meta: BtoMeta) -> Dataset:
    measures = Dataset()
    measures.PixelSpacing = [f"{meta.pixel_spacing_mm:g}"] * 2
    measures.SliceThickness = f"{meta.slice_spacing_mm:g}"
    measures.SpacingBetweenSlices = f"{meta.slice_spacing_mm:g}"
    plane = Dataset()
    plane.ImageOrientationPatient = orientation(meta.laterality, meta.view, meta.rotated_180)
    rescale = Dataset()
    rescale.RescaleIntercept = "0"
    rescale.RescaleSlope = "1"
    rescale.RescaleType = "US"
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = Sequence([_code_item(*BREAST_CODE)])
    if meta.frame_laterality:
        anatomy.FrameLaterality = meta.laterality

    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    shared.FrameAnatomySequence = Sequence([anatomy])
    if meta.has_window and not meta.windows_per_frame:
        shared.FrameVOILUTSequence = Sequence([_voi_item(meta)])
    return shared


def _per_frame_groups(meta: BtoMeta, frames: int) -> Sequence:
    iop = np.asarray(orientation(meta.laterality, meta.view, meta.rotated_180))
    normal = np.cross(iop[:3], iop[3:])
    origin = np.zeros(3)
    stamp = dt.datetime.combine(meta.study_date, meta.study_time)
    items = []
    for i in range(frames):
        content = Dataset()
        content.FrameAcquisitionNumber = i + 1
        content.FrameReferenceDateTime = (stamp + dt.timedelta(milliseconds=100 * i)).strftime(
            "%Y%m%d%H%M%S.%f"
        )
        position = Dataset()
        ipp = origin + i * meta.slice_spacing_mm * normal
        position.ImagePositionPatient = [f"{v + 0.0:g}" for v in ipp]
        frame_type = Dataset()
        frame_type.FrameType = _IMAGE_TYPE
        frame_type.PixelPresentation = "MONOCHROME"
        frame_type.VolumetricProperties = "VOLUME"
        frame_type.VolumeBasedCalculationTechnique = "NONE"
        item = Dataset()
        item.FrameContentSequence = Sequence([content])
        item.PlanePositionSequence = Sequence([position])
        item.XRay3DFrameTypeSequence = Sequence([frame_type])
        if meta.has_window and meta.windows_per_frame:
            item.FrameVOILUTSequence = Sequence([_voi_item(meta)])
        items.append(item)
    return Sequence(items)


def build_dataset(volume: np.ndarray, meta: BtoMeta) -> Dataset:
    """Build the BTO dataset (uncompressed pixel data, Explicit VR LE file meta)."""
    frames, rows, cols = volume.shape
    sop_uid = derived_uid(meta.series_instance_uid, "sop")
    date = meta.study_date.strftime("%Y%m%d")
    time = meta.study_time.strftime("%H%M%S")

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = BTO_SOP_CLASS_UID
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = BTO_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Patient and study (with planted PHI).
    ds.PatientName = meta.patient_name
    ds.PatientID = meta.patient_id
    ds.PatientBirthDate = meta.patient_birth_date.strftime("%Y%m%d")
    ds.PatientSex = "F"
    ds.StudyInstanceUID = meta.study_instance_uid
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = meta.referring_physician_name
    ds.StudyID = meta.accession_number
    ds.AccessionNumber = meta.accession_number
    ds.StudyDescription = meta.study_description
    # Series, frame of reference and equipment.
    ds.Modality = "MG"
    ds.SeriesInstanceUID = meta.series_instance_uid
    ds.SeriesNumber = meta.series_number
    ds.FrameOfReferenceUID = derived_uid(meta.series_instance_uid, "for")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = meta.manufacturer
    ds.ManufacturerModelName = meta.model_name
    ds.DeviceSerialNumber = meta.device_serial_number
    ds.SoftwareVersions = meta.software_version
    ds.InstitutionName = meta.institution_name
    # Image, X-Ray 3D and breast view.
    ds.InstanceNumber = 1
    ds.ContentDate = date
    ds.ContentTime = time
    ds.ImageType = _IMAGE_TYPE
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ContentQualification = "RESEARCH"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    context = [] if meta.breast_composition is None else [composition_item(meta.breast_composition)]
    ds.AcquisitionContextSequence = Sequence(context)
    ds.BreastImplantPresent = "NO"
    view = _code_item(*VIEW_CODES[meta.view])
    view.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([view])
    if meta.vendor_extras:
        ds.ImageLaterality = meta.laterality
        ds.ViewPosition = meta.view
        iop = orientation(meta.laterality, meta.view, meta.rotated_180)
        ds.PatientOrientation = [_direction_letter(iop[:3]), _direction_letter(iop[3:])]
    # Image pixel.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = meta.photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = meta.bits_stored
    ds.HighBit = meta.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_group(meta)])
    ds.PerFrameFunctionalGroupsSequence = _per_frame_groups(meta, frames)
    return ds


def stored_pixels(volume: np.ndarray, meta: BtoMeta) -> np.ndarray:
    """The pixel values as stored: inverted within ``bits_stored`` for MONOCHROME1."""
    if meta.photometric == "MONOCHROME1":
        return ((1 << meta.bits_stored) - 1 - volume).astype(np.uint16)
    return volume


def _check_volume(volume: np.ndarray, meta: BtoMeta) -> None:
    if not isinstance(volume, np.ndarray) or volume.ndim != 3:
        raise BtoError("volume must be a 3-D numpy array (frames, rows, cols)")
    if volume.dtype != np.uint16:
        raise BtoError(f"volume must be uint16, got {volume.dtype}")
    if min(volume.shape) < 1:
        raise BtoError(f"volume has an empty axis: {volume.shape}")
    limit = (1 << meta.bits_stored) - 1
    if int(volume.max()) > limit:
        raise BtoError(f"volume max {int(volume.max())} exceeds {limit} ({meta.bits_stored} bits)")


def write_bto(
    path: str | Path, volume: np.ndarray, meta: BtoMeta, transfer_syntax: str = "jpeg2000"
) -> Path:
    """Write ``volume`` (uint16, ``(frames, rows, cols)``, display sense) as a BTO file.

    ``transfer_syntax`` is one of "jpeg2000" (lossless, default), "jpegls" (lossless),
    "rle" or "explicit" (uncompressed). The write is atomic; returns the path written.
    """
    tsyntax = resolve_transfer_syntax(transfer_syntax)
    _check_volume(volume, meta)
    if transfer_syntax == "jpeg2000" and min(volume.shape[1:]) < 32:
        # openjpeg always uses 6 wavelet resolutions, which need at least 32 pixels per side.
        raise BtoError(
            f"jpeg2000 needs rows and cols >= 32, got {volume.shape[1:]}; "
            "use another transfer syntax"
        )
    pixels = np.ascontiguousarray(stored_pixels(volume, meta))
    ds = build_dataset(pixels, meta)
    if tsyntax == ExplicitVRLittleEndian:
        ds.PixelData = pixels.tobytes()
    else:
        ds.compress(
            tsyntax,
            pixels,
            encoding_plugin=_ENCODING_PLUGINS[transfer_syntax],
            generate_instance_uid=False,
        )
    target = Path(path)
    with atomic_path(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target
