"""Per-model figures from verdicts equal a hand count; /metrics and /review/stats show them; the
drift alarm fires below validation PPV - margin and not above it."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.support.review_gateway import REVIEW_TOKEN, Gateway

from medgate.review.monitoring import model_figures, validation_ppv
from medgate.review.verdicts import ReviewInput, VerdictInput, submit_review

AUTH = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
KEY = ("tiny_cxr", "0.0.1")


def _review(gateway: Gateway, uid: str, minutes: float, verdicts: list[tuple[str, str]]) -> None:
    study = gateway.index.studies.get(uid)
    assert study is not None and study.results_built_at is not None
    submit_review(
        gateway.index,
        gateway.settings,
        gateway.audit,
        uid,
        ReviewInput("Wang^Li", "rad-007", tuple(VerdictInput(f, v) for f, v in verdicts)),
        actor="test",
        now=study.results_built_at + dt.timedelta(minutes=minutes),
    )


@pytest.fixture
def reviewed(gateway: Gateway) -> Gateway:
    a, b, c = (gateway.process(seed) for seed in (91, 92, 93))
    for uid in (a, b, c):  # the tiny model: pneumothorax and cardiomegaly present, effusion absent
        study = gateway.index.studies.get(uid)
        assert study is not None and study.result is not None
        calls = {f["label"]: f["present"] for f in study.result["findings"]}
        assert calls["pneumothorax"] and calls["cardiomegaly"] and not calls["effusion"]
    _review(
        gateway,
        a,
        12,
        [("pneumothorax", "confirmed"), ("cardiomegaly", "rejected"), ("effusion", "confirmed")],
    )
    _review(gateway, b, 45, [("pneumothorax", "rejected"), ("effusion", "rejected")])
    _review(gateway, c, 30, [("pneumothorax", "confirmed"), ("cardiomegaly", "confirmed")])
    return gateway


def test_figures_equal_a_hand_count(reviewed: Gateway) -> None:
    # hand count: TP = A ptx, C ptx, C cardiomegaly = 3; FP = A cardiomegaly, B ptx = 2;
    # FN = B effusion (AI absent, radiologist: present) = 1; TN = A effusion = 1
    (figures,) = model_figures(reviewed.index, reviewed.settings)
    assert (figures.bundle, figures.version) == KEY
    assert (figures.tp, figures.fp, figures.fn, figures.tn) == (3, 2, 1, 1)
    assert figures.judged == 7 and figures.reviewed_studies == 3
    assert figures.sensitivity == pytest.approx(3 / 4)
    assert figures.ppv == pytest.approx(3 / 5)
    assert sorted(figures.review_minutes) == pytest.approx([12, 30, 45], abs=1e-6)
    assert figures.median_review_minutes == pytest.approx(30)
    # AI-positive outcomes in review order: A ptx 1, A cardio 0, C ptx 1, C cardio 1, B ptx 0
    assert figures.positive_outcomes == [1, 0, 1, 1, 0]
    assert figures.rolling_confirmed_rate(2) == pytest.approx([1, 0.5, 0.5, 1, 0.5])
    assert figures.recent_confirmed_rate == pytest.approx(0.6)
    assert figures.drift_alarm is False  # the tiny bundle has no validation figures


def test_drift_alarm_below_validation_minus_margin(reviewed: Gateway) -> None:
    review = reviewed.settings.review.model_copy(
        update={"drift_min_reviews": 5, "drift_margin": 0.15}
    )
    settings = reviewed.settings.model_copy(update={"review": review})
    (low,) = model_figures(reviewed.index, settings, {KEY: 0.80})  # 0.6 < 0.80 - 0.15
    assert low.drift_alarm is True
    (fine,) = model_figures(reviewed.index, settings, {KEY: 0.70})  # 0.6 >= 0.70 - 0.15
    assert fine.drift_alarm is False
    few = settings.model_copy(
        update={"review": settings.review.model_copy(update={"drift_min_reviews": 6})}
    )
    (quiet,) = model_figures(reviewed.index, few, {KEY: 0.80})  # only 5 judged positives
    assert quiet.drift_alarm is False


def test_validation_ppv_from_bundle_metrics() -> None:
    metrics = {
        "held_out": {
            "metrics": {
                "nodule": {"confusion": {"tp": 8, "fp": 2, "fn": 1, "tn": 9}},
                "effusion": {"confusion": {"tp": 2, "fp": 8, "fn": 0, "tn": 10}},
                "mean_auc": 0.9,
            }
        }
    }
    assert validation_ppv(metrics) == pytest.approx(10 / 20)
    assert validation_ppv({}) is None


def test_metrics_and_stats_page_show_the_figures(reviewed: Gateway) -> None:
    text = reviewed.client.get("/metrics").text
    assert 'medgate_review_ppv{bundle="tiny_cxr",version="0.0.1"} 0.6' in text
    assert 'medgate_review_sensitivity{bundle="tiny_cxr",version="0.0.1"} 0.75' in text
    assert 'medgate_review_minutes_median{bundle="tiny_cxr",version="0.0.1"} 30.0' in text
    assert 'medgate_review_drift_alarm{bundle="tiny_cxr",version="0.0.1"} 0.0' in text
    assert "medgate_queue_depth" in text  # the pipeline's own gauges are still there
    page = reviewed.client.get("/review/stats?lang=en", headers=AUTH)
    assert page.status_code == 200
    assert 'data-bundle="tiny_cxr"' in page.text
    assert '<td class="ppv">0.600</td>' in page.text
    assert '<td class="sensitivity">0.750</td>' in page.text
    assert "<polyline" in page.text
