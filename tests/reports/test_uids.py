"""Deterministic result UIDs: same inputs, same UID; any change, another UID."""

from __future__ import annotations

import pytest
from pydicom.uid import UID

from medgate.core.uids import derived_uid, run_set_parts


def test_derived_uid_is_deterministic_valid_and_sensitive() -> None:
    parts = run_set_parts("1.2.3", ["1.2.3.5", "1.2.3.4"], [("cxr", "1.0"), ("seg", "2.0")])
    same = run_set_parts("1.2.3", ["1.2.3.4", "1.2.3.5"], [("seg", "2.0"), ("cxr", "1.0")])
    assert parts == same  # order of sources and bundles does not matter
    uid = derived_uid(*parts, "sr")
    assert uid == derived_uid(*same, "sr")
    assert UID(uid).is_valid and len(uid) <= 64
    assert uid != derived_uid(*parts, "seg")
    newer = run_set_parts("1.2.3", ["1.2.3.4", "1.2.3.5"], [("cxr", "1.1"), ("seg", "2.0")])
    assert uid != derived_uid(*newer, "sr")  # a retrained model writes new objects
    assert derived_uid("1.2", "3") != derived_uid("1.", "23")


def test_derived_uid_refuses_bad_parts() -> None:
    with pytest.raises(ValueError):
        derived_uid()
    with pytest.raises(TypeError):
        derived_uid("1.2", 3)  # type: ignore[arg-type]


def test_one_uid_maker_under_the_uuid_root() -> None:
    """Results, model devices and phantoms share one maker, under 2.25 (not pydicom's root)."""
    from pydicom.uid import PYDICOM_ROOT_UID

    from medgate.datasets.ct_phantom import NAMESPACE, _uid
    from medgate.models.bundle import device_uid_for

    uid = derived_uid("1.2.3", "sr")
    assert uid.startswith("2.25.") and not uid.startswith(PYDICOM_ROOT_UID)
    assert int(uid.removeprefix("2.25.")) < 2**128
    assert device_uid_for("ab" * 32) == derived_uid("medgate-model", "ab" * 32)
    assert _uid("study", 7) == derived_uid(NAMESPACE, "study", "7")
