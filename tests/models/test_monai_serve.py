"""Acceptance of issue 23 through ``medgate serve``: zoo-shaped MONAI bundles served as MONAI
runs them, with more bundles than CPUs in ``models.path``.

One gateway (its own local Ray on 2 CPUs, a real Orthanc as the PACS) with seven bundles:
the segmentation and classification bundles (approved by hash), three more approved copies (so
five image bundles asking 0.5 CPU each: more than the 2 CPUs hold), one copy that asks 8 CPUs
of its own (cannot be placed) and one copy nobody approved. The gateway must come up, serve
the five, report the other two; a CT series sent from Orthanc over DICOM must come back as a
SEG whose mask matches ``monai.bundle run`` on the same files (Dice >= 0.99); the
classification bundle's probabilities over HTTP must match MONAI's within 1e-4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from tests.support.gateway_process import GatewayProcess, wait_for
from tests.support.monai_zoo_bundles import (
    CLS_CHANNELS,
    read_saved_mask,
    run_with_monai,
    write_classification_bundle,
    write_segmentation_bundle,
)

from medgate.core.ports import free_port
from medgate.datasets.ct_phantom import ct_series_datasets, generate_ct_phantom, write_ct_series
from medgate.dicom.orthanc import OrthancServer
from medgate.models.approval import bundle_hash, trust_entry

SERVED = ["filler_a", "filler_b", "filler_c", "zoo_ct_cls", "zoo_ct_seg"]


def _bundles(root: Path) -> list[str]:
    """The seven bundles; returns the models.trusted entries (all but the unapproved one)."""
    seg = write_segmentation_bundle(root)
    cls = write_classification_bundle(root)
    for name in ("filler_a", "filler_b", "filler_c", "zoo_huge"):
        shutil.copytree(cls, root / name)
    shutil.copytree(seg, root / "zoo_unapproved")
    names = [*SERVED, "zoo_huge"]
    return [trust_entry(name, bundle_hash(root / name)) for name in names]


def _config(tmp_path: Path, orthanc: OrthancServer, port: int, api_port: int) -> Path:
    models = tmp_path / "models"
    trusted = _bundles(models)
    config = tmp_path / "medgate.toml"
    config.write_text(
        f"""
[dicom]
ae_title = "MEDGATE"
host = "127.0.0.1"
port = {port}
study_idle_seconds = 1.0

[pacs]
ae_title = "{orthanc.ae_title}"
host = "127.0.0.1"
port = {orthanc.dicom_port}

[storage]
path = "{tmp_path / "store"}"
min_free_mb = 0

[api]
host = "127.0.0.1"
port = {api_port}

[models]
path = "{models}"
device = "cpu"
num_cpus = 0.5
trusted = {json.dumps(trusted)}

[models.bundles.zoo_huge]
num_cpus = 8.0

[serving]
ray_num_cpus = 2

[[routing.rules]]
name = "chest-ct"
bundles = ["zoo_ct_seg", "zoo_ct_cls"]
modalities = ["CT"]
min_slices = 8

[audit]
hash_key = "issue-23-test-key"
"""
    )
    return config


def _seg_mask(orthanc: OrthancServer, study_uid: str, source_uids: list[str]) -> np.ndarray:
    """The SEG's segment 1 on the source slices, (slice, row, column) in ``source_uids`` order."""
    import io

    import highdicom as hd

    for item in orthanc.study_instances(study_uid):
        tags = orthanc.get(f"/instances/{item['ID']}/simplified-tags")
        if tags.get("Modality") == "SEG":
            seg = hd.seg.Segmentation.from_dataset(
                dcmread(io.BytesIO(orthanc.instance_file(item["ID"])))
            )
            assert seg.get_segment_description(1).segment_label == "soft tissue"
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=source_uids,
                segment_numbers=[1],
                combine_segments=True,
                skip_overlap_checks=True,
            )
            return np.asarray(pixels)
    raise AssertionError("no SEG in Orthanc")


def _result_series(orthanc: OrthancServer, study_uid: str) -> set[tuple[str, str]]:
    """(Modality, SeriesDescription) of every instance Orthanc holds for the study."""
    described = set()
    for item in orthanc.study_instances(study_uid):
        tags = orthanc.get(f"/instances/{item['ID']}/simplified-tags")
        described.add((str(tags.get("Modality")), str(tags.get("SeriesDescription", ""))))
    return described


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.mark.slow
def test_zoo_bundles_through_medgate_serve(
    tmp_path: Path, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    port, api_port = free_port(), free_port()
    orthanc = orthanc_factory(modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", port)})
    config = _config(tmp_path, orthanc, port, api_port)
    phantom = generate_ct_phantom(7)
    series = tmp_path / "series"
    write_ct_series(phantom, series)
    (series / "mask.npz").unlink()
    datasets = ct_series_datasets(phantom)
    study_uid = str(datasets[0].StudyInstanceUID)
    source_uids = [str(ds.SOPInstanceUID) for ds in datasets]

    # the references: MONAI's own run of each bundle on the same files
    models = tmp_path / "models"
    run_with_monai(models / "zoo_ct_seg", series, tmp_path / "monai-seg")
    reference_mask = read_saved_mask(tmp_path / "monai-seg" / "series_seg.nii.gz")
    cls_output = run_with_monai(models / "zoo_ct_cls", series, tmp_path / "monai-cls")
    reference_probs = np.asarray(cls_output[0]["pred"]).reshape(-1)

    command = [sys.executable, "-m", "medgate.cli.main", "models", "list", "--config", str(config)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MEDGATE_")}
    listing = json.loads(
        subprocess.run(
            [*command, "--json"], capture_output=True, text=True, env=environment, timeout=120
        ).stdout
    )
    notes = {b["name"]: b["serving"] for b in listing["bundles"]}
    assert notes["zoo_huge"].startswith("not served: [models.bundles.zoo_huge] asks 8 CPU")
    assert {notes[name] for name in SERVED} == {"1 x 0.38 CPU"}  # five share 2 - 0.1 CPU
    (waiting,) = listing["problems"]
    assert waiting["trust_entry"].startswith("zoo_unapproved@")

    api = f"http://127.0.0.1:{api_port}"
    gateway = GatewayProcess(config, api, tmp_path)
    gateway.start(timeout=420)
    try:
        log = gateway.log.read_text(errors="replace")
        assert "zoo_huge" in log and "asks 8 CPU" in log
        ready = httpx.get(f"{api}/readyz", timeout=30).json()
        assert ready["status"] == "ready"
        served = sorted(name for name, loaded in ready["models"].items() if loaded)
        assert served == SERVED
        errors = ready["model_errors"]
        assert "asks 8 CPU" in errors["zoo_huge"]
        assert "needs approval" in errors["zoo_unapproved"]

        # a CT series from the PACS over DICOM, the SEG back in the PACS
        ids = [orthanc.upload(p.read_bytes())["ID"] for p in sorted(series.glob("*.dcm"))]
        orthanc.post("/modalities/MEDGATE/store", json={"Resources": ids, "Synchronous": True})

        def finished() -> dict | None:
            detail = httpx.get(f"{api}/api/v1/studies/{study_uid}", timeout=30)
            body = detail.json() if detail.status_code == 200 else {}
            return body if body.get("status") in ("done", "failed") else None

        detail = wait_for(finished, 300, 1.0, "the CT study to be processed")
        assert detail["status"] == "done", detail
        ran = {m["name"]: m["task"] for m in detail["result"]["models"]}
        assert ran == {"zoo_ct_seg": "segmentation", "zoo_ct_cls": "classification"}
        assert detail["findings"] == []  # scores without thresholds: no present/absent call
        stored = {s["label"]: s["probability"] for s in detail["result"]["scores"]}
        np.testing.assert_allclose(
            [stored[name] for name in CLS_CHANNELS.values()], reference_probs, atol=1e-4
        )
        wait_for(
            lambda: all(orthanc.find_instance(u) for u in detail["result_uids"]),
            120,
            0.5,
            "the results in Orthanc",
        )
        described = _result_series(orthanc, study_uid)
        assert {"SEG", "SR"} <= {modality for modality, _ in described}
        assert ("OT", "AI overlay - not for diagnosis") in described
        mask = _seg_mask(orthanc, study_uid, source_uids)
        assert mask.shape == reference_mask.shape
        assert reference_mask.sum() > 10_000
        assert dice(mask, reference_mask) >= 0.99

        # the classification bundle over HTTP on the same study
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in series.glob("*")]
        answer = httpx.post(f"{api}/api/v1/models/zoo_ct_cls/infer", files=files, timeout=300)
        assert answer.status_code == 200, answer.text
        scores = answer.json()["result"]["scores"]
        got = np.array([scores[name] for name in CLS_CHANNELS.values()])
        np.testing.assert_allclose(got, reference_probs, atol=1e-4)
        assert answer.json()["result"]["findings"] == []
        unapproved = httpx.post(f"{api}/api/v1/models/zoo_unapproved/infer", files=files)
        assert unapproved.status_code == 404
    finally:
        code = gateway.stop()
    assert code == 0
