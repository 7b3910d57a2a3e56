"""C-STORE a study's result objects to a site's own PACS (``[sites.pacs]``), for the queue.

The regional PACS gets every result through the outbox (``delivery.pacs``); a site that runs a
PACS of its own gets the same objects through the delivery queue as one message per study: all
objects over one association. Answers are classified like the regional sender's: an association
that does not come up, or a C-STORE without a response, says nothing about the objects (retried
without limit); a failure status is the PACS refusing an object (bounded retries, then the dead
letter). Objects stored by an earlier try are simply stored again (same SOP Instance UIDs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.status import code_to_category

from medgate.core.config import Settings
from medgate.dicom.net import SUCCESS_OR_WARNING, Peer, associate, association_failure, scu_ae


class DicomStoreError(Exception):
    """The site PACS could not be reached or gave no answer; the objects may be fine."""


@dataclass(frozen=True)
class StoreAnswer:
    accepted: bool
    code: str
    text: str


def files_payload(objects: list[dict[str, str]]) -> str:
    """The queued message of a site-PACS delivery: the result objects' UIDs and files."""
    return json.dumps({"objects": objects}, sort_keys=True)


def store_objects(settings: Settings, peer: Peer, payload: str) -> StoreAnswer:
    """C-STORE every object of ``payload`` to ``peer`` over one association."""
    objects = json.loads(payload)["objects"]
    datasets: list[Dataset] = []
    for obj in objects:
        try:
            datasets.append(dcmread(obj["path"]))
        except (OSError, InvalidDicomError) as exc:
            return StoreAnswer(False, "unreadable", f"result file unreadable: {type(exc).__name__}")
    if not datasets:
        return StoreAnswer(True, "empty", "")
    ae = scu_ae(settings)
    contexts = sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    )
    for sop_class, syntax in contexts[:128]:
        syntaxes = [syntax] + [
            s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if s != syntax
        ]
        ae.add_requested_context(sop_class, syntaxes)
    assoc = associate(ae, settings, peer)
    if not assoc.is_established:
        raise DicomStoreError(association_failure(assoc))
    refused: list[str] = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError:  # no accepted presentation context for this object
                refused.append("not accepted (SOP class or transfer syntax)")
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise DicomStoreError("no C-STORE response (timeout or abort)")
            if code_to_category(code) not in SUCCESS_OR_WARNING:
                comment = str(getattr(status, "ErrorComment", "") or "")
                refused.append(f"status 0x{code:04X} {comment}".strip())
    finally:
        if assoc.is_established:
            assoc.release()
    if refused:
        return StoreAnswer(False, "refused", "; ".join(refused)[:300])
    return StoreAnswer(True, "0x0000", "")
