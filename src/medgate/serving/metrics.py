"""Pipeline metrics (stage latencies, batch sizes, errors) gathered across Ray processes.

The worker, the model replicas and the HTTP ingress run in different processes, possibly on
different nodes, so a process-local Prometheus registry would show each one only its own part.
Observations therefore go to one small Ray actor (``medgate-metrics``, zero CPUs); each process
buffers them and sends them in one fire-and-forget call every quarter second, since a Ray call
per observation cost about a millisecond of the request path on two cores (three per HTTP
inference). ``GET /metrics`` asks the actor for a snapshot (at most one flush interval behind)
and renders Prometheus text with ``prometheus_client``. Without Ray (tests of the bare FastAPI
app, the bench's direct call) the same store lives in-process.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from medgate.core.pass_loop import PassLoop

log = logging.getLogger(__name__)

ACTOR_NAME = "medgate-metrics"
NAMESPACE = "medgate"
FLUSH_SECONDS = 0.25

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)

# metric name -> (kind, help, label names, buckets)
METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "medgate_stage_seconds": (
        "histogram",
        "Seconds spent per pipeline stage (route, load, model, triage, guidance, reports, "
        "write, total).",
        ("stage",),
        SECONDS_BUCKETS,
    ),
    "medgate_model_batch_size": (
        "histogram",
        "Number of studies per model invocation formed by dynamic batching.",
        ("bundle",),
        BATCH_BUCKETS,
    ),
    "medgate_model_inference_seconds": (
        "histogram",
        "Seconds per batched model invocation (backend call only).",
        ("bundle",),
        SECONDS_BUCKETS,
    ),
    "medgate_errors_total": ("counter", "Errors per pipeline stage.", ("stage",), ()),
    "medgate_jobs_total": ("counter", "Finished jobs by outcome.", ("status",), ()),
}

LabelKey = tuple[str, ...]


class MetricsStore:
    """Histogram and counter state, thread-safe; also the body of the Ray actor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> labels -> [bucket counts..., count, sum]  (histograms)
        self._hist: dict[str, dict[LabelKey, list[float]]] = {}
        self._count: dict[str, dict[LabelKey, float]] = {}

    def observe(self, name: str, value: float, labels: Iterable[str] = ()) -> None:
        kind, _, label_names, buckets = METRICS[name]
        key = tuple(labels)
        if len(key) != len(label_names):
            raise ValueError(f"{name} takes labels {label_names}, got {key}")
        with self._lock:
            if kind == "counter":
                table = self._count.setdefault(name, {})
                table[key] = table.get(key, 0.0) + value
                return
            row = self._hist.setdefault(name, {}).setdefault(key, [0.0] * (len(buckets) + 2))
            position = bisect.bisect_left(buckets, value)
            if position < len(buckets):
                row[position] += 1
            row[-2] += 1
            row[-1] += value

    def inc(self, name: str, labels: Iterable[str] = (), amount: float = 1.0) -> None:
        self.observe(name, amount, labels)

    def observe_many(self, observations: Iterable[tuple[str, float, tuple[str, ...]]]) -> None:
        """A batch of ``(name, value, labels)`` (what ``RayMetrics`` flushes)."""
        for name, value, labels in observations:
            self.observe(name, value, labels)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "hist": {n: {k: list(v) for k, v in t.items()} for n, t in self._hist.items()},
                "count": {n: dict(t) for n, t in self._count.items()},
            }


class MetricsSink(Protocol):
    def observe(self, name: str, value: float, labels: Iterable[str] = ()) -> None: ...

    def inc(self, name: str, labels: Iterable[str] = (), amount: float = 1.0) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...


class RayMetrics(PassLoop):
    """A sink that forwards to the named actor in batches; never lets a metrics failure break
    the pipeline. Observations are checked here (a wrong label set raises at once, like the
    local store) and flushed every ``flush_seconds`` by a pass loop started by the first one."""

    thread_name = "medgate-metrics-flush"

    def __init__(self, actor: Any, flush_seconds: float = FLUSH_SECONDS) -> None:
        self._actor = actor
        self.interval = flush_seconds
        self._pending: list[tuple[str, float, tuple[str, ...]]] = []
        self._lock = threading.Lock()
        super().__init__()

    def observe(self, name: str, value: float, labels: Iterable[str] = ()) -> None:
        key = tuple(labels)
        label_names = METRICS[name][2]
        if len(key) != len(label_names):
            raise ValueError(f"{name} takes labels {label_names}, got {key}")
        with self._lock:
            self._pending.append((name, float(value), key))
            if not self.running:
                self.start()

    def inc(self, name: str, labels: Iterable[str] = (), amount: float = 1.0) -> None:
        self.observe(name, amount, labels)

    def flush(self) -> None:
        """Send what is buffered now (also before a snapshot, so a process sees its own)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._actor.observe_many.remote(batch)
        except Exception as exc:
            log.debug("metrics observations lost: %s", exc)

    def run_once(self) -> None:
        self.flush()

    def snapshot(self) -> dict[str, Any]:
        import ray

        self.flush()
        return dict(ray.get(self._actor.snapshot.remote(), timeout=10))


def ensure_metrics_actor() -> RayMetrics:
    """Create (or find) the cluster-wide metrics actor; call from the driver after ray.init."""
    import ray

    actor_cls = ray.remote(num_cpus=0)(MetricsStore)
    actor = actor_cls.options(
        name=ACTOR_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()
    return RayMetrics(actor)


def remove_metrics_actor() -> None:
    """Kill the detached metrics actor (``medgate serve`` shutdown)."""
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE))


def metrics_sink() -> MetricsSink:
    """The sink for this process: the Ray actor when it exists, else a process-local store."""
    try:
        import ray

        if ray.is_initialized():
            return RayMetrics(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE))
    except Exception:
        pass
    return _LOCAL


_LOCAL = MetricsStore()


class _SnapshotCollector:
    def __init__(self, snapshot: Mapping[str, Any], gauges: Mapping[str, float]) -> None:
        self.snapshot = snapshot
        self.gauges = gauges

    def collect(self) -> Iterable[Any]:
        for name, value in self.gauges.items():
            gauge = GaugeMetricFamily(name, _GAUGE_HELP.get(name, name))
            gauge.add_metric([], value)
            yield gauge
        for name, (kind, help_text, label_names, buckets) in METRICS.items():
            if kind == "counter":
                counter = CounterMetricFamily(name, help_text, labels=list(label_names))
                for key, value in self.snapshot.get("count", {}).get(name, {}).items():
                    counter.add_metric(list(key), value)
                yield counter
                continue
            hist = HistogramMetricFamily(name, help_text, labels=list(label_names))
            for key, row in self.snapshot.get("hist", {}).get(name, {}).items():
                cumulative: list[tuple[str, float]] = []
                running = 0.0
                for bound, count in zip(buckets, row[: len(buckets)], strict=True):
                    running += count
                    cumulative.append((_fmt(bound), running))
                cumulative.append(("+Inf", row[-2]))
                hist.add_metric(list(key), cumulative, row[-1])
            yield hist


_GAUGE_HELP = {
    "medgate_queue_depth": "Jobs waiting in the queue.",
    "medgate_outbox_pending": "Result objects waiting to be sent to the PACS.",
    "medgate_studies_overdue": "Worklist studies waiting past their priority's maximum wait.",
}


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def render(snapshot: Mapping[str, Any], gauges: Mapping[str, float]) -> bytes:
    """Prometheus text exposition of a snapshot plus point-in-time gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, gauges))
    return generate_latest(registry)
