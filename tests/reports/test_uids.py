"""Deterministic result UIDs: same inputs, same UID; any change, another UID."""

from __future__ import annotations

import pytest
from pydicom.uid import UID

from medgate.core.uids import result_uid, run_set_parts


def test_result_uid_is_deterministic_valid_and_sensitive() -> None:
    parts = run_set_parts("1.2.3", ["1.2.3.5", "1.2.3.4"], [("cxr", "1.0"), ("seg", "2.0")])
    same = run_set_parts("1.2.3", ["1.2.3.4", "1.2.3.5"], [("seg", "2.0"), ("cxr", "1.0")])
    assert parts == same  # order of sources and bundles does not matter
    uid = result_uid(*parts, "sr")
    assert uid == result_uid(*same, "sr")
    assert UID(uid).is_valid and len(uid) <= 64
    assert uid != result_uid(*parts, "seg")
    newer = run_set_parts("1.2.3", ["1.2.3.4", "1.2.3.5"], [("cxr", "1.1"), ("seg", "2.0")])
    assert uid != result_uid(*newer, "sr")  # a retrained model writes new objects
    assert result_uid("1.2", "3") != result_uid("1.", "23")


def test_result_uid_refuses_bad_parts() -> None:
    with pytest.raises(ValueError):
        result_uid()
    with pytest.raises(TypeError):
        result_uid("1.2", 3)  # type: ignore[arg-type]
