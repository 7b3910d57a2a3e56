"""The PACS poll mode (``dicom.poll_seconds``) against a real Orthanc: the background loop finds
the new study and pulls it without anyone calling ``poll_once``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

from medgate.cli.dicom_service import DicomService
from medgate.core.ports import free_port
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.orthanc import OrthancServer


def test_poll_mode_pulls_new_studies_in_the_background(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    port = free_port()
    orthanc = orthanc_factory(modalities={"medgate": ("MEDGATE", "127.0.0.1", port)})
    uids = []
    for path in ct_series(tmp_path / "series", 3, rows=32, columns=32):
        orthanc.upload(path.read_bytes())
        uids.append(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    pacs = {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}
    service = service_factory(dicom={"port": port, "poll_seconds": 0.2}, pacs=pacs)
    deadline = time.monotonic() + 30
    while service.index.instances.count() < len(uids) and time.monotonic() < deadline:
        time.sleep(0.1)
    service.retriever.stop_polling()
    assert all(service.index.instances.get(uid) is not None for uid in uids)
