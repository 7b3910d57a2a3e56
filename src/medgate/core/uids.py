"""The one maker of deterministic DICOM UIDs: result objects, model devices, phantom studies.

The durability rules ask that a study processed twice yields one set of results: the PACS then
replaces an object instead of storing a duplicate. So every UID medgate writes is a hash of what
the object is derived from (source study, source instances, bundle names and versions, object
kind; a model's weights; a phantom's seed), never a random or time-based value.

The UIDs are under the ``2.25`` root (PS3.5 B.2: a UUID as one integer), the UUID being a
name-based (version 5 layout) one from SHA-256 of the parts: no organisation root is needed, and
nothing medgate writes borrows pydicom's root, which is meant for pydicom's own examples.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

UUID_ROOT = "2.25."

#: Joins the parts: it cannot occur in a UID, so ("1.2", "3") and ("1.", "23") stay apart.
_SEPARATOR = "\x1f"


def derived_uid(*parts: str) -> str:
    """A UID that depends only on ``parts`` (order matters): same parts, same UID.

    >>> derived_uid("1.2.3", "sr") == derived_uid("1.2.3", "sr")
    True
    >>> derived_uid("1.2.3", "sr").startswith("2.25.")
    True
    """
    if not parts:
        raise ValueError("derived_uid needs at least one part to derive the UID from")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"derived_uid parts must be str, got {type(part).__name__}")
    digest = hashlib.sha256(_SEPARATOR.join(parts).encode()).digest()[:16]
    name_based = uuid.UUID(bytes=digest, version=5)  # RFC 4122 version and variant bits
    return f"{UUID_ROOT}{name_based.int}"


def run_set_parts(
    study_instance_uid: str,
    source_sop_instance_uids: Iterable[str],
    bundles: Iterable[tuple[str, str]],
) -> tuple[str, ...]:
    """The parts that identify one study's model run set: study, sorted sources, sorted bundles."""
    sources = sorted(set(source_sop_instance_uids))
    runs = sorted({f"{name}@{version}" for name, version in bundles})
    return (study_instance_uid, "sources", *sources, "bundles", *runs)
