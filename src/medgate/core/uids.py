"""Deterministic UIDs for result objects.

The durability rules ask that a study processed twice yields one set of results: the PACS then
replaces an object instead of storing a duplicate. So every UID medgate writes is a hash of what
the object is derived from (source study, source instances, bundle names and versions, object
kind), never a random or time-based value.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

#: Root under which result UIDs are made (pydicom's root; ``generate_uid`` hashes the parts).
UID_PREFIX = PYDICOM_ROOT_UID


def result_uid(*parts: str) -> str:
    """A UID that depends only on ``parts`` (order matters): same parts, same UID.

    >>> result_uid("1.2.3", "sr") == result_uid("1.2.3", "sr")
    True
    """
    if not parts:
        raise ValueError("result_uid needs at least one part to derive the UID from")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"result_uid parts must be str, got {type(part).__name__}")
    # A separator that cannot occur in UIDs keeps ("1.2", "3") apart from ("1.", "23").
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["\x1f".join(parts)]))


def run_set_parts(
    study_instance_uid: str,
    source_sop_instance_uids: Iterable[str],
    bundles: Iterable[tuple[str, str]],
) -> tuple[str, ...]:
    """The parts that identify one study's model run set: study, sorted sources, sorted bundles."""
    sources = sorted(set(source_sop_instance_uids))
    runs = sorted({f"{name}@{version}" for name, version in bundles})
    return (study_instance_uid, "sources", *sources, "bundles", *runs)
