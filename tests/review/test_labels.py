"""medgate export --labels: reviewed studies, de-identified, with the radiologist's labels in the
folder format medgate train reads; the output trains a (tiny) model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pydicom
from tests.support.configs import settings_to_toml
from tests.support.review_gateway import REVIEW_TOKEN, Gateway
from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.datasets.folder import read_labeled_folder

AUTH = {"Authorization": f"Bearer {REVIEW_TOKEN}"}


def _findings(gateway: Gateway, uid: str) -> list[dict[str, Any]]:
    study = gateway.index.studies.get(uid)
    assert study is not None and study.result is not None
    return list(study.result["findings"])


def _review(gateway: Gateway, uid: str, verdicts: list[dict[str, object]]) -> None:
    body = {"reviewer": {"name": "Wang^Li", "id": "rad-007"}, "verdicts": verdicts}
    answer = gateway.client.post(f"/api/v1/studies/{uid}/review", json=body, headers=AUTH)
    assert answer.status_code == 201, answer.text


def test_export_labels_writes_a_training_folder_that_trains(
    gateway: Gateway, tmp_path: Path
) -> None:
    uids = [gateway.process(seed) for seed in (81, 82, 83, 84, 85)]
    ai = {uid: {f["label"]: int(f["present"]) for f in _findings(gateway, uid)} for uid in uids}
    # four reviewed (one left unreviewed: not exported)
    _review(gateway, uids[0], [{"finding": "pneumothorax", "verdict": "confirmed"}])
    _review(gateway, uids[1], [{"finding": "pneumothorax", "verdict": "rejected"}])
    _review(
        gateway,
        uids[2],
        [
            {"finding": "nodule", "verdict": "rejected"},
            {"finding": "cardiomegaly", "verdict": "rejected"},
        ],
    )
    _review(gateway, uids[3], [{"finding": "effusion", "verdict": "confirmed"}])
    expected = {
        uids[0]: {**ai[uids[0]], "pneumothorax": ai[uids[0]]["pneumothorax"]},
        uids[1]: {**ai[uids[1]], "pneumothorax": 1 - ai[uids[1]]["pneumothorax"]},
        uids[2]: {
            **ai[uids[2]],
            "nodule": 1 - ai[uids[2]]["nodule"],
            "cardiomegaly": 1 - ai[uids[2]]["cardiomegaly"],
        },
        uids[3]: {**ai[uids[3]], "effusion": ai[uids[3]]["effusion"]},
    }
    config = tmp_path / "medgate.toml"
    config.write_text(settings_to_toml(gateway.settings))
    out = tmp_path / "labels"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--labels", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "exported 4 reviewed studies" in result.output

    studies = read_labeled_folder(out)
    assert len(studies) == 4
    # de-identified: no original UID or patient ID anywhere in the folder's table or files
    table = (out / "labels.csv").read_text()
    originals = {
        str(pydicom.dcmread(gateway.index.instances.of_study(u)[0].path).PatientID) for u in uids
    }
    assert not any(u in table for u in uids) and not any(p in table for p in originals)
    for study in studies:
        ds = study.datasets()[0]
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientID) == study.patient_id
    # the labels are the radiologist's, matched through the export's keyed UID mapping
    from medgate.trust.export import deidentifier_from_settings

    deid = deidentifier_from_settings(gateway.settings)
    by_deid = {deid.uid(u): u for u in expected}
    for study in studies:
        original = by_deid[study.study_instance_uid]
        assert study.labels == expected[original]
    rows = {r["study_instance_uid"]: r for r in csv.DictReader((out / "labels.csv").open())}
    assert rows[deid.uid(uids[2])]["explicit"] == "cardiomegaly;nodule"
    assert rows[deid.uid(uids[0])]["explicit"] == "pneumothorax"

    # medgate train reads it
    train = {
        "task": "classification",
        "preset": "cxr_findings",
        "name": "from_reviews",
        "out": str(tmp_path / "bundle"),
        "run_dir": str(tmp_path / "run"),
        "size": 48,
        "epochs": 1,
        "batch_size": 4,
        "data": {"train": str(out), "val": str(out)},
        "network": {"kind": "map_classifier", "args": {"channels": [8, 16, 16]}},
    }
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps(train))
    trained = runner.invoke(app, ["train", str(cfg), "--quiet"])
    assert trained.exit_code == 0, trained.output
    from medgate.models.bundle import Bundle

    bundle = Bundle.load(tmp_path / "bundle")
    assert bundle.name == "from_reviews"
    assert [label.name for label in bundle.spec.labels] == list(read_labeled_folder(out)[0].labels)


def test_export_labels_without_reviews_is_a_clear_error(gateway: Gateway, tmp_path: Path) -> None:
    gateway.process(86)
    config = tmp_path / "medgate.toml"
    config.write_text(settings_to_toml(gateway.settings))
    runner = CliRunner()
    result = runner.invoke(
        app, ["export", "--labels", str(tmp_path / "x"), "--config", str(config)]
    )
    assert result.exit_code != 0 and "no reviewed studies" in result.output
    both = runner.invoke(
        app, ["export", "--labels", "a", "--deidentify", "b", "--config", str(config)]
    )
    assert both.exit_code != 0 and "one of --deidentify" in both.output


def test_labels_from_verdicts_by_hand() -> None:
    """Every verdict kind against a hand-written expectation (the tiny test model has no
    measurements, so 'modified' with a value is checked here)."""
    import datetime as dt

    from medgate.review.labels import radiologist_labels
    from medgate.store.reviews import ReviewRow

    findings = [
        {"label": "nodule", "present": True},
        {"label": "effusion", "present": False},
        {"label": "pneumothorax", "present": True},
        {"label": "cardiomegaly", "present": False},
    ]
    review = ReviewRow(
        id=1,
        study_instance_uid="1.2.3",
        revision=1,
        reviewer_id="r",
        reviewer_name="R",
        verdicts=[
            {"finding": "nodule", "verdict": "modified", "value": 9.0, "comment": ""},
            {"finding": "effusion", "verdict": "rejected", "value": None, "comment": ""},
            {"finding": "pneumothorax", "verdict": "rejected", "value": None, "comment": ""},
        ],
        report_text=None,
        request_sha256="x",
        sr_sop_instance_uid="2.25.1",
        predecessor_sop_instance_uid="2.25.2",
        bundle_versions={},
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert radiologist_labels(review, findings) == {
        "nodule": 1,
        "nodule_value": 9.0,
        "effusion": 1,  # AI absent, rejected: present
        "pneumothorax": 0,  # AI present, rejected: absent
        "cardiomegaly": 0,  # no verdict: the AI's call in the signed report
        "explicit": "effusion;nodule;pneumothorax",
    }
