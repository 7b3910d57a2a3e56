"""Which model bundles run on a study: declarative rules from ``config.routing.rules``.

Routing works on the index rows of a study's instances (modality, body part, SOP class, series
description, instance count per series), so a decision needs no pixel data and is cheap enough
to explain in the API. A rule matches a *series* when every field the rule sets matches; the
study goes to the union of the bundles of all matching rules, each bundle seeing only the
instances of the series that matched. No match gives a reason string that says what was seen,
so that ``not-processed`` studies explain themselves.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medgate.core.config import RouteRule


@dataclass(frozen=True)
class SeriesInfo:
    """The routing-relevant facts of one series, gathered from the index."""

    series_instance_uid: str
    modality: str
    body_part: str
    sop_class_uids: frozenset[str]
    series_description: str
    sop_instance_uids: tuple[str, ...]

    @property
    def slices(self) -> int:
        return len(self.sop_instance_uids)

    def describe(self) -> str:
        return f"{self.modality or '?'}/{self.body_part or '?'} ({self.slices} instances)"


@dataclass
class RouteDecision:
    """The outcome of routing: bundle name -> instances it must see, and why."""

    bundles: dict[str, list[str]] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def matched(self) -> bool:
        return bool(self.bundles)


def series_of(instances: Iterable[Mapping[str, Any]]) -> list[SeriesInfo]:
    """Group index rows (``db.Index.study_instances``) into series."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in instances:
        grouped[str(row["series_instance_uid"])].append(row)
    result: list[SeriesInfo] = []
    for uid, rows in grouped.items():
        first = rows[0]
        result.append(
            SeriesInfo(
                series_instance_uid=uid,
                modality=(first.get("modality") or "").upper(),
                body_part=(first.get("body_part") or "").upper(),
                sop_class_uids=frozenset(str(r["sop_class_uid"]) for r in rows),
                series_description=first.get("series_description") or "",
                sop_instance_uids=tuple(str(r["sop_instance_uid"]) for r in rows),
            )
        )
    return result


class Router:
    """Evaluates the configured rules; patterns are compiled once, bad ones fail at start-up."""

    def __init__(self, rules: Sequence[RouteRule], available: Iterable[str] | None = None) -> None:
        self.rules = list(rules)
        self.available = set(available) if available is not None else None
        self._patterns: dict[str, re.Pattern[str]] = {}
        for rule in self.rules:
            if rule.series_description_pattern:
                try:
                    self._patterns[rule.name] = re.compile(
                        rule.series_description_pattern, re.IGNORECASE
                    )
                except re.error as exc:
                    raise ValueError(
                        f"routing rule {rule.name!r}: bad series_description_pattern: {exc}"
                    ) from exc

    def rule_matches(self, rule: RouteRule, series: SeriesInfo) -> bool:
        """True when ``series`` satisfies every field that ``rule`` sets."""
        if rule.modalities and series.modality not in {m.upper() for m in rule.modalities}:
            return False
        if rule.body_parts and series.body_part not in {b.upper() for b in rule.body_parts}:
            return False
        if rule.sop_class_uids and not series.sop_class_uids & set(rule.sop_class_uids):
            return False
        pattern = self._patterns.get(rule.name)
        if pattern is not None and not pattern.search(series.series_description):
            return False
        if rule.min_slices is not None and series.slices < rule.min_slices:
            return False
        return not (rule.max_slices is not None and series.slices > rule.max_slices)

    def route(self, instances: Iterable[Mapping[str, Any]]) -> RouteDecision:
        """Decide which bundles see which instances of a study."""
        all_series = series_of(instances)
        decision = RouteDecision()
        if not all_series:
            decision.reason = "the study has no instances"
            return decision
        missing: set[str] = set()
        for rule in self.rules:
            matched = [s for s in all_series if self.rule_matches(rule, s)]
            if not matched:
                continue
            decision.rules.append(rule.name)
            for bundle in rule.bundles:
                if self.available is not None and bundle not in self.available:
                    missing.add(bundle)
                    continue
                uids = decision.bundles.setdefault(bundle, [])
                for series in matched:
                    uids.extend(u for u in series.sop_instance_uids if u not in uids)
        if not decision.bundles:
            seen = ", ".join(sorted({s.describe() for s in all_series}))
            if decision.rules:
                decision.reason = (
                    f"rule(s) {', '.join(decision.rules)} matched but bundle(s) "
                    f"{', '.join(sorted(missing))} are not installed"
                )
            else:
                decision.reason = f"no routing rule matches the study's series: {seen}"
        return decision
