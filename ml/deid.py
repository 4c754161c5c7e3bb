"""De-identify DICOM images: PS3.15 Annex E Basic Application Confidentiality Profile.

Identifiers are replaced by keyed pseudonyms (HMAC-SHA256 under a secret), so the
same input always gives the same output: the files of a study stay linked, a re-run
writes identical bytes, and nobody without the secret can recompute or reverse them.

Options applied (declared in DeidentificationMethodCodeSequence, CID 7050):

- *Retain Longitudinal Temporal Information, Modified Dates* (113107): every DA and
  DT value, nested sequences included (per-frame FrameReferenceDateTime ...), moves
  by one offset per patient, keyed by the patient, in ``[-730, -1]`` days, so the
  intervals between a patient's exams survive.  Times of day (TM, and the time part
  of DT) are kept: once the date has moved they no longer identify.  A date that
  cannot be parsed is emptied rather than kept.
- *Retain Patient Characteristics* (113108): age, sex, size, weight, ethnic group,
  smoking and pregnancy status are kept (age is a risk and density covariate).

Not applied: Retain Device Identity (serial numbers, station names are removed or
replaced by a dummy where the IOD requires a value), Retain UIDs (every instance UID
becomes a keyed ``2.25.`` UID), Retain Safe Private (all private attributes are
removed), Clean Descriptors (descriptions and comments are removed, not cleaned).

PatientID and PatientName become the patient pseudonym, StudyID the study pseudonym
(keyed by the caller's keys when given, e.g. Duke's "DBT-P00001" / "DBT-S00001").

Beyond the table: every PN and AE value is emptied, every UN element, curve (50xx)
and overlay (60xx) group is removed, and the 128-byte file preamble is zeroed.
Pixel data is never decoded or changed; burned-in text is not searched for (BTO
requires BurnedInAnnotation NO).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from ml.dicomio import NotDicomError
from ml.atomic import atomic_path

MIN_SECRET_BYTES = 16
MAX_SHIFT_DAYS = 730
PSEUDONYM_PREFIXES = {"patient": "P", "study": "S"}
PSEUDONYM_HEX_CHARS = 12
DUMMY_VALUE = "DEIDENTIFIED"
DEIDENTIFICATION_METHOD = [
    "PS3.15 E.1 Basic Application Confidentiality Profile",
    "Retain Longitudinal Temporal Information Modified Dates Option",
    "Retain Patient Characteristics Option",
    "tomosight ml.deid 1: keyed HMAC-SHA256 pseudonyms",
]
# CID 7050 De-identification Method codes (scheme DCM).
METHOD_CODES = [
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
]

Action = Literal["X", "Z", "D"]
"""X: remove; Z: keep the attribute with an empty value; D: replace by a dummy value."""

# Basic Profile actions for attributes that a mammography/tomosynthesis object may carry,
# chosen so the BTO and MG IODs still validate: Z where the IOD makes the attribute
# type 2, D where it is type 1 (DeviceSerialNumber in Enhanced General Equipment).
# UIDs (U), dates (C, shifted) and PatientID/PatientName (pseudonyms) are handled by VR
# and after the walk; retained attributes are simply not listed.
BASIC_PROFILE: dict[str, Action] = {
    # Patient
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "IssuerOfPatientID": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "MedicalRecordLocator": "X",
    "Occupation": "X",
    "PatientReligiousPreference": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "PatientPrimaryLanguageModifierCodeSequence": "X",
    "ReferencedPatientPhotoSequence": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientAliasSequence": "X",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    "PatientComments": "X",
    "AdditionalPatientHistory": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "LastMenstrualDate": "X",
    "PatientState": "X",
    "SpecialNeeds": "X",
    # Visit and admission
    "AdmissionID": "X",
    "IssuerOfAdmissionID": "X",
    "IssuerOfAdmissionIDSequence": "X",
    "ServiceEpisodeID": "X",
    "IssuerOfServiceEpisodeID": "X",
    "IssuerOfServiceEpisodeIDSequence": "X",
    "ServiceEpisodeDescription": "X",
    "CurrentPatientLocation": "X",
    "PatientInstitutionResidence": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "VisitComments": "X",
    "ReasonForVisit": "X",
    "ReasonForVisitCodeSequence": "X",
    # Study, request and procedure steps
    "AccessionNumber": "Z",
    "StudyID": "Z",  # then set to the study pseudonym
    "StudyIDIssuer": "X",
    "StudyDescription": "X",
    "StudyComments": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "Z",
    "ConsultingPhysicianIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "ReferencedStudySequence": "X",
    "RequestAttributesSequence": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureComments": "X",
    "RequestedSeriesDescription": "X",
    "ReasonForStudy": "X",
    "ReasonForTheRequestedProcedure": "X",
    "ReasonForRequestedProcedureCodeSequence": "X",
    "ReasonForTheImagingServiceRequest": "X",
    "ImagingServiceRequestComments": "X",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "FillerOrderNumberImagingServiceRequest": "Z",
    "ScheduledProcedureStepID": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledStationName": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledProcedureStepLocation": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformedStationName": "X",
    "PerformedStationAETitle": "X",
    "PerformedLocation": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "ActualHumanPerformersSequence": "X",
    "HumanPerformerName": "X",
    "HumanPerformerOrganization": "X",
    # Series, acquisition and image
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "AcquisitionProtocolDescription": "X",
    "AcquisitionDeviceProcessingDescription": "X",
    "AcquisitionComments": "X",
    "AcquisitionContextSequence": "Z",
    "DerivationDescription": "X",
    "ImageComments": "X",
    "FrameComments": "X",
    "ImagePresentationComments": "X",
    "IdentifyingComments": "X",
    "CommentsOnRadiationDose": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "IconImageSequence": "X",
    "TimezoneOffsetFromUTC": "X",
    # Institution and equipment (Retain Device/Institution Identity not applied)
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionCodeSequence": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionalDepartmentTypeCodeSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "D",
    "DetectorID": "X",
    "XRayDetectorID": "D",
    "XRayDetectorLabel": "X",
    "XRaySourceID": "D",
    "PlateID": "X",
    "CassetteID": "X",
    "GantryID": "X",
    "GeneratorID": "X",
    "UniqueDeviceIdentifier": "X",
    "UDISequence": "X",
    "DeviceDescription": "X",
    "LongDeviceDescription": "X",
    "ModifyingDeviceID": "X",
    "ModifiedImageDescription": "X",
    # Clinical trial
    "ClinicalTrialSponsorName": "D",
    "ClinicalTrialProtocolID": "D",
    "ClinicalTrialProtocolName": "Z",
    "ClinicalTrialSiteID": "Z",
    "ClinicalTrialSiteName": "Z",
    "ClinicalTrialSubjectID": "D",
    "ClinicalTrialSubjectReadingID": "D",
    "ClinicalTrialTimePointID": "Z",
    "ClinicalTrialTimePointDescription": "X",
    "ClinicalTrialCoordinatingCenterName": "Z",
    "ClinicalTrialSeriesID": "X",
    "ClinicalTrialSeriesDescription": "X",
    "ClinicalTrialProtocolEthicsCommitteeName": "D",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber": "X",
    # Persons, organisations, structured content
    "PersonAddress": "X",
    "PersonTelephoneNumbers": "X",
    "PersonTelecomInformation": "X",
    "ParticipantSequence": "X",
    "AuthorObserverSequence": "X",
    "CustodialOrganizationSequence": "X",
    "VerifyingOrganization": "D",
    "ContentCreatorIdentificationCodeSequence": "X",
    # Audit trails, signatures, free text
    "OriginalAttributesSequence": "X",
    "ModifiedAttributesSequence": "X",
    "DigitalSignaturesSequence": "X",
    "ReferencedDigitalSignatureSequence": "X",
    "ReferencedSOPInstanceMACSequence": "X",
    "DataSetTrailingPadding": "X",
    "Arbitrary": "X",
    "TextComments": "X",
    "TextString": "X",
    # File meta: who sent the file, and private meta information
    "SourceApplicationEntityTitle": "X",
    "SendingApplicationEntityTitle": "X",
    "ReceivingApplicationEntityTitle": "X",
    "SourcePresentationAddress": "X",
    "SendingPresentationAddress": "X",
    "ReceivingPresentationAddress": "X",
    "PrivateInformationCreatorUID": "X",
    "PrivateInformation": "X",
}
_ACTIONS: dict[int, Action] = {
    tag_for_keyword(k): a for k, a in BASIC_PROFILE.items()  # type: ignore[misc]
}

# UI attributes that name a class, syntax or coding scheme, not an instance: kept.
KEPT_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "MappingResourceUID",
    }
)
_EMPTIED_VRS = frozenset({"PN", "AE"})
_DT_PATTERN = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")


class DeidError(ValueError):
    """Raised when a dataset or key cannot be de-identified as asked."""


@dataclass(frozen=True)
class DeidResult:
    """A de-identified copy of a dataset and the keyed values used for it."""

    dataset: Dataset = field(repr=False)
    patient_pseudonym: str
    study_pseudonym: str
    shift_days: int


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, (bytes, bytearray)):
        raise DeidError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise DeidError(
            f"secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}; "
            "make one with secrets.token_bytes(32)"
        )


def _digest(secret: bytes, domain: str, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under ``secret``, separated per ``domain``."""
    _check_secret(secret)
    return hmac.new(bytes(secret), f"{domain}\x1f{value}".encode(), hashlib.sha256).digest()


def pseudonym(secret: bytes, kind: str, value: str) -> str:
    """Keyed pseudonym of ``value``: ``"P-"`` (patient) or ``"S-"`` (study) + 12 hex characters."""
    if kind not in PSEUDONYM_PREFIXES:
        close = difflib.get_close_matches(kind, PSEUDONYM_PREFIXES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DeidError(
            f"unknown pseudonym kind {kind!r}; expected one of {sorted(PSEUDONYM_PREFIXES)}.{hint}"
        )
    digest = _digest(secret, kind, value).hex()
    return f"{PSEUDONYM_PREFIXES[kind]}-{digest[:PSEUDONYM_HEX_CHARS]}"


def pseudonym_uid(secret: bytes, uid: str) -> str:
    """Keyed UID ``2.25.<decimal of the first 128 bits of the HMAC>`` (at most 44 characters)."""
    return f"2.25.{int.from_bytes(_digest(secret, 'uid', str(uid).strip())[:16], 'big')}"


def date_shift_days(secret: bytes, patient_id: str) -> int:
    """The patient's keyed date offset in ``[-730, -1]`` days (the same for all their studies)."""
    value = int.from_bytes(_digest(secret, "date-shift", patient_id)[:8], "big")
    return -(value % MAX_SHIFT_DAYS + 1)


def _format_date(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (``YYYYMMDD``, or the old ``YYYY.MM.DD``) by ``days``."""
    text = value.strip()
    if len(text) == 10 and text[4] == text[7] == ".":
        text = text.replace(".", "")
    if not (len(text) == 8 and text.isdigit()):
        raise ValueError(f"not a DA value: {value!r}")
    return _format_date(datetime.strptime(text, "%Y%m%d").date() + timedelta(days=days))


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value by ``days``, keeping its precision, time and offset."""
    match = _DT_PATTERN.match(value.strip())
    if match is None:
        raise ValueError(f"not a DT value: {value!r}")
    year, month, day, rest = match.groups()
    if day is None and rest and rest[0] not in "+-":
        raise ValueError(f"not a DT value: {value!r}")
    moved = date(int(year), int(month or 1), int(day or 1)) + timedelta(days=days)
    text = _format_date(moved)
    return text[: 4 + (2 if month else 0) + (2 if day else 0)] + rest


def _map_values(elem: DataElement, fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to every non-empty value of ``elem``; a value ``fn`` rejects becomes empty."""
    if elem.value is None or elem.value == "":
        return
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    out = []
    for value in values:
        try:
            out.append(fn(str(value)) if str(value).strip() else "")
        except (ValueError, OverflowError):
            out.append("")
    kept = [v for v in out if v]
    elem.value = kept if len(kept) > 1 else (kept[0] if kept else "")


@dataclass(frozen=True)
class _Keys:
    secret: bytes
    shift_days: int

    def uid(self, keyword: str, value: str) -> str:
        if keyword in KEPT_UID_KEYWORDS or value in UID_dictionary:
            return value
        return pseudonym_uid(self.secret, value)


def _clean(ds: Dataset, keys: _Keys) -> None:
    """Apply the profile to ``ds`` and every nested item, in place."""
    for elem in list(ds):
        tag = elem.tag
        if tag.is_private or elem.VR == "UN" or tag.group >> 8 in (0x50, 0x60):
            del ds[tag]
            continue
        action = _ACTIONS.get(tag)
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else ""
        elif action == "D":
            elem.value = DUMMY_VALUE
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, keys)
        elif elem.VR == "UI":
            keyword = elem.keyword
            _map_values(elem, lambda v: keys.uid(keyword, v))
        elif elem.VR == "DA":
            _map_values(elem, lambda v: shift_da(v, keys.shift_days))
        elif elem.VR == "DT":
            _map_values(elem, lambda v: shift_dt(v, keys.shift_days))
        elif elem.VR in _EMPTIED_VRS:
            elem.value = ""


def _required_key(value: str | None, ds: Dataset, keyword: str, argument: str) -> str:
    key = value if value is not None else str(ds.get(keyword, "") or "")
    if not key.strip():  # used as given, so pseudonym(secret, kind, key) gives the same value
        raise DeidError(f"no {keyword} in the dataset to pseudonymise; pass {argument}=")
    return key


def _method_code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def deidentify(
    ds: Dataset, secret: bytes, *, patient_id: str | None = None, study_id: str | None = None
) -> DeidResult:
    """Return a de-identified copy of ``ds`` (the input is not changed).

    ``patient_id`` / ``study_id`` override the keys that are pseudonymised and that
    key the date shift (default: the dataset's PatientID and StudyInstanceUID); use
    the same key for every file of a patient, e.g. the Duke CSV's PatientID.
    """
    _check_secret(secret)
    patient_key = _required_key(patient_id, ds, "PatientID", "patient_id")
    study_key = _required_key(study_id, ds, "StudyInstanceUID", "study_id")
    keys = _Keys(bytes(secret), date_shift_days(secret, patient_key))
    patient = pseudonym(secret, "patient", patient_key)

    out = copy.deepcopy(ds)
    _clean(out, keys)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        _clean(meta, keys)
        if "SOPInstanceUID" in out:
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.PatientID = patient
    out.PatientName = f"{patient}^"  # family name only; "^" avoids the retired-form warning
    study = pseudonym(secret, "study", study_key)
    out.StudyID = study  # Annex E "Z" allows a dummy; an empty StudyID draws a dciodvfy warning
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    out.DeidentificationMethodCodeSequence = Sequence([_method_code(*c) for c in METHOD_CODES])
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    out.preamble = b"\x00" * 128
    return DeidResult(out, patient, study, keys.shift_days)


def deidentify_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    secret: bytes,
    *,
    patient_id: str | None = None,
    study_id: str | None = None,
) -> DeidResult:
    """De-identify the file ``src`` into ``dst`` (atomic write; pixel data bytes copied as is)."""
    _check_secret(secret)
    try:
        ds = pydicom.dcmread(src)
    except InvalidDicomError as exc:
        raise NotDicomError(src, f"not a DICOM file ({exc})") from exc
    result = deidentify(ds, secret, patient_id=patient_id, study_id=study_id)
    with atomic_path(dst) as tmp:
        result.dataset.save_as(tmp, enforce_file_format=True)
    return result
