"""The learned demo model: held-out metrics reproduce the card, ONNX parity, patient split."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.metrics import brier_score_loss, roc_auc_score
from tests.support.cds_data import DEMO_MODEL_INPUTS
from tests.support.paths import MODELS, REPO

from medgate.models.tabular import BundleError, TabularPredictor
from medgate.training import tabular

CONFIG = REPO / "configs" / "train" / "cds_diabetes_risk.toml"


@pytest.fixture(scope="module")
def config() -> dict:
    return tomllib.loads(CONFIG.read_text())


@pytest.fixture(scope="module")
def fitted(config: dict) -> tabular.TabularFit:
    return tabular.fit(config)


def test_committed_bundle_reproduces_its_model_card(config: dict) -> None:
    bundle = MODELS / "cds_diabetes_risk"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert (
        meta["demo_not_for_clinical_use"] is True
        and "NOT FOR CLINICAL USE" in (meta["intended_use"])
    )
    merged = tabular.merged_config(config)
    x, y, ids, _ = tabular.load_data(merged)
    test_ids = np.array(meta["training_data"]["test_patient_ids"])
    rows = np.array([list(ids).index(p) for p in test_ids])
    predictor = TabularPredictor(bundle)
    p = predictor.predict_proba(x[rows])
    assert roc_auc_score(y[rows], p) == pytest.approx(meta["metrics"]["test_auc"], abs=1e-4)
    assert brier_score_loss(y[rows], p) == pytest.approx(meta["metrics"]["test_brier"], abs=1e-4)
    assert meta["metrics"]["test_auc"] > 0.75  # better than chance by a margin on held-out data
    assert meta["metrics"]["test_brier"] < meta["metrics"]["test_prevalence"] * (
        1 - meta["metrics"]["test_prevalence"]
    )  # better than predicting the prevalence


def test_patient_level_split_is_disjoint_and_covers_everyone(fitted: tabular.TabularFit) -> None:
    sets = [set(fitted.train_ids), set(fitted.calibration_ids), set(fitted.test_ids)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == len(fitted.patient_ids) == 442


def test_onnx_matches_sklearn(fitted: tabular.TabularFit, tmp_path: Path) -> None:
    bundle = tabular.write_bundle(fitted, tmp_path)
    predictor = TabularPredictor(bundle)
    expected = fitted.pipeline.predict_proba(fitted.x)[:, 1]
    got = predictor.predict_proba(fitted.x)
    assert np.max(np.abs(got - expected)) < 1e-5
    with Image.open(bundle / "docs" / "calibration.png") as image:
        assert image.size[0] > 100
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["metrics"]["test_auc"] == pytest.approx(fitted.metrics["test_auc"])


def test_reason_codes_name_the_drivers(fitted: tabular.TabularFit, tmp_path: Path) -> None:
    predictor = TabularPredictor(tabular.write_bundle(fitted, tmp_path))
    values = dict(zip(predictor.names, fitted.x[0], strict=True))
    high_glucose = {**values, "glucose_mg_dl": 124.0, "ln_triglycerides_mg_dl": 6.0}
    prediction = predictor.predict(high_glucose)
    assert len(prediction.reasons) == 3
    assert prediction.reasons[0].direction in {"raises risk", "lowers risk"}
    logit = np.log(prediction.probability / (1 - prediction.probability))
    meta = predictor.metadata["explain"]
    total = meta["intercept"] + sum(
        c * (high_glucose[n] - m) / s
        for c, n, m, s in zip(
            meta["coef"], predictor.names, meta["mean"], meta["scale"], strict=True
        )
    )
    assert logit == pytest.approx(total, abs=1e-3)  # contributions add up to the log-odds


def test_tampered_bundle_is_refused(fitted: tabular.TabularFit, tmp_path: Path) -> None:
    bundle = tabular.write_bundle(fitted, tmp_path)
    (bundle / "models" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError):
        TabularPredictor(bundle)


def test_model_endpoint(client: TestClient) -> None:
    body = DEMO_MODEL_INPUTS
    data = client.post("/api/v1/cds/diabetes-progression", json=body).json()
    assert 0 < data["probability"] < 1
    assert data["model"]["demo_not_for_clinical_use"] is True
    assert {r["feature"] for r in data["reasons"]} <= set(body)
