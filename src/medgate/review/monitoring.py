"""How each model version does in practice, from the radiologists' verdicts.

Per bundle version (the finding's ``bundle``/``version`` in the study JSON), over the findings a
radiologist gave an explicit verdict on (a finding without a verdict says nothing about the AI):

* truth = the radiologist's label (``review.labels.radiologist_labels``), prediction = the AI's
  present/absent call; TP, FP, FN, TN;
* sensitivity = TP / (TP + FN), PPV = TP / (TP + FP) (None when the denominator is 0);
* time to review: from the study's results being built (else its arrival) to the review, in
  minutes (median and mean), one value per reviewed study;
* confirmed rate over the last ``review.drift_window`` AI-positive findings judged (= recent PPV),
  and the drift alarm: that rate < the bundle's validation PPV (held-out confusion matrices in its
  metadata) - ``review.drift_margin``, once at least ``review.drift_min_reviews`` were judged.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from medgate.core.config import Settings
from medgate.review.labels import radiologist_labels
from medgate.store.db import Index
from medgate.store.reviews import ReviewStore


@dataclass
class ModelFigures:
    bundle: str
    version: str
    reviewed_studies: int = 0
    judged: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    review_minutes: list[float] = field(default_factory=list)
    #: 1 = confirmed, 0 = rejected, for AI-positive findings, in review order
    positive_outcomes: list[int] = field(default_factory=list)
    validation_ppv: float | None = None
    recent_confirmed_rate: float | None = None
    drift_alarm: bool = False

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def ppv(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def median_review_minutes(self) -> float | None:
        return statistics.median(self.review_minutes) if self.review_minutes else None

    @property
    def mean_review_minutes(self) -> float | None:
        return statistics.fmean(self.review_minutes) if self.review_minutes else None

    def rolling_confirmed_rate(self, window: int) -> list[float]:
        """The confirmed rate over the last ``window`` outcomes, after each one (the plot)."""
        out = self.positive_outcomes
        return [
            sum(out[max(0, i + 1 - window) : i + 1]) / len(out[max(0, i + 1 - window) : i + 1])
            for i in range(len(out))
        ]


def validation_ppv(metadata_metrics: Mapping[str, Any]) -> float | None:
    """PPV on the bundle's held-out set, from the confusion matrices ``medgate evaluate`` writes
    (``metrics.held_out.metrics.<label>.confusion``), summed over labels."""
    held = (metadata_metrics.get("held_out") or {}).get("metrics") or {}
    tp = fp = 0
    for entry in held.values():
        confusion = entry.get("confusion") if isinstance(entry, Mapping) else None
        if isinstance(confusion, Mapping):
            tp += int(confusion.get("tp", 0))
            fp += int(confusion.get("fp", 0))
    return tp / (tp + fp) if tp + fp else None


def model_figures(
    index: Index,
    settings: Settings,
    validation: Mapping[tuple[str, str], float | None] | None = None,
) -> list[ModelFigures]:
    """Figures per (bundle, version), ordered by name then version."""
    validation = validation or {}
    figures: dict[tuple[str, str], ModelFigures] = {}
    reviews = sorted(ReviewStore(index.engine).current(), key=lambda r: r.created_at)
    for review in reviews:
        study = index.studies.get(review.study_instance_uid)
        if study is None or not study.result:
            continue
        findings = list(study.result.get("findings") or [])
        truth = radiologist_labels(review, findings)
        explicit = set(filter(None, str(truth["explicit"]).split(";")))
        started = study.results_built_at or study.received_at
        minutes = max(0.0, (review.created_at - started).total_seconds() / 60.0)
        seen: set[tuple[str, str]] = set()
        for finding in findings:
            key = (str(finding.get("bundle", "")), str(finding.get("version", "")))
            entry = figures.setdefault(key, ModelFigures(*key))
            if key not in seen:
                seen.add(key)
                entry.reviewed_studies += 1
                entry.review_minutes.append(minutes)
            label = str(finding["label"])
            if label not in explicit:
                continue
            predicted, actual = bool(finding.get("present")), bool(truth[label])
            entry.judged += 1
            if predicted and actual:
                entry.tp += 1
            elif predicted:
                entry.fp += 1
            elif actual:
                entry.fn += 1
            else:
                entry.tn += 1
            if predicted:
                entry.positive_outcomes.append(int(actual))
    window, margin = settings.review.drift_window, settings.review.drift_margin
    for key, entry in figures.items():
        entry.validation_ppv = validation.get(key)
        recent = entry.positive_outcomes[-window:]
        entry.recent_confirmed_rate = sum(recent) / len(recent) if recent else None
        entry.drift_alarm = (
            entry.validation_ppv is not None
            and entry.recent_confirmed_rate is not None
            and len(recent) >= settings.review.drift_min_reviews
            and entry.recent_confirmed_rate < entry.validation_ppv - margin
        )
    return [figures[k] for k in sorted(figures)]


def prometheus_text(figures: list[ModelFigures], now: dt.datetime | None = None) -> bytes:
    """The figures as Prometheus gauges labelled by bundle and version (for ``/metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    labels = ["bundle", "version"]
    gauges = {
        "sensitivity": Gauge(
            "medgate_review_sensitivity",
            "Sensitivity vs radiologists' verdicts.",
            labels,
            registry=registry,
        ),
        "ppv": Gauge(
            "medgate_review_ppv", "PPV vs radiologists' verdicts.", labels, registry=registry
        ),
        "judged": Gauge(
            "medgate_review_findings_judged",
            "Findings with an explicit verdict.",
            labels,
            registry=registry,
        ),
        "studies": Gauge("medgate_review_studies", "Reviewed studies.", labels, registry=registry),
        "minutes": Gauge(
            "medgate_review_minutes_median",
            "Median minutes from results to review.",
            labels,
            registry=registry,
        ),
        "alarm": Gauge(
            "medgate_review_drift_alarm",
            "1 when the recent confirmed rate fell below validation PPV - margin.",
            labels,
            registry=registry,
        ),
    }
    for f in figures:
        values = {
            "sensitivity": f.sensitivity,
            "ppv": f.ppv,
            "judged": float(f.judged),
            "studies": float(f.reviewed_studies),
            "minutes": f.median_review_minutes,
            "alarm": float(f.drift_alarm),
        }
        for name, value in values.items():
            if value is not None:
                gauges[name].labels(f.bundle, f.version).set(value)
    return generate_latest(registry)
