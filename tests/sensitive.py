"""Secrets and identifiers the tests send to servers, which no log line may ever hold.

The session-end check in tests/conftest.py greps the audit trail and every log of the run for
them; tests that send keys, client file names or DICOM patient fields take them from here
(:data:`NONSTANDARD`: patient and study values written the way some scanners do, not as DICOM says).
"""

from __future__ import annotations

# API keys (high-entropy, as `echoseg keys new` makes them)
KEYS = {
    "scanner": "sk-test-scanner-3f9a1c7e5b2d4a60b8e1f0c2d3a4b5c6",
    "bridge": "sk-test-bridge-7d2e9b4c1a8f6e3d5c0b9a8f7e6d5c4b",
    "late": "sk-test-late-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "legacy": "sk-test-legacy-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
    "metrics": "sk-test-metrics-5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a09",
    "audit": "sk-test-audit-1f2e3d4c5b6a79880f1e2d3c4b5a6978",
}
# a client's file name and the DICOM patient fields of the clip it uploads
FILE_NAME = "DOE^JANE_1962-03-14_echo_A4C.dcm"
PATIENT = {
    "PatientName": "Doe^Jane^Quinn",
    "PatientID": "MRN-88412977",
    "PatientBirthDate": "19620314",
    "InstitutionName": "St Elsewhere Cardiology",
    "StudyDescription": "ECHO ADULT TTE Jane follow-up",
}
# values a scanner writes the non-standard way (pydicom and highdicom quote such values in warnings):
# a dashed birth date, a slashed study date, a study time with letters, a caret-less name, and a UID
NONSTANDARD = {
    "PatientName": "QUINCY ROSALIND HARTE",
    "PatientBirthDate": "1958-11-23",
    "StudyDate": "2026/02/17",
    "StudyTime": "09h41m07",
    "StudyInstanceUID": "1.2.840.77.4419abc.58",
}
# what the session-end check looks for (the keys of older tests are short words, checked where used)
NEEDLES = [*KEYS.values(), FILE_NAME, *PATIENT.values(), "Doe^Jane", "MRN-88412977", *NONSTANDARD.values()]
