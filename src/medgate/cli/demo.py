"""``medgate demo``: the whole chain on one machine, with real parts only.

1. Debian's Orthanc starts on loopback ports as the regional PACS, with medgate as a known
   modality;
2. medgate starts in-process (local Ray, Serve, DICOM service, worker) pointed at that Orthanc;
3. synthetic chest radiographs with known findings (``datasets.cxr_phantom``) are uploaded to
   Orthanc, which C-STOREs them to medgate (as a PACS forwarding rule would);
4. medgate assembles the studies, runs the models, triage and guidance, and sends SR (and SEG /
   overlay) back; the demo waits until Orthanc holds every result object;
5. per study it prints the findings, the priority, the guidance and the Orthanc link, then
   stops everything.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer

log = logging.getLogger(__name__)
console = Console()

# Findings forced per demo study (cycled): a normal study first, then one finding class each.
DEMO_CASES: tuple[dict[str, bool], ...] = (
    {"nodule": False, "effusion": False, "pneumothorax": False, "cardiomegaly": False},
    {"nodule": True, "effusion": False, "pneumothorax": False, "cardiomegaly": False},
    {"nodule": False, "effusion": False, "pneumothorax": True, "cardiomegaly": False},
    {"nodule": False, "effusion": True, "pneumothorax": False, "cardiomegaly": True},
)
DEMO_SEED_BASE = 9_100_000


class DemoError(RuntimeError):
    """The demo cannot run (no bundles, Orthanc missing ...); the message says what to do."""


@dataclass
class DemoStudy:
    seed: int
    study_uid: str
    truth: dict[str, int]
    status: str = "sent"
    result: dict[str, Any] = field(default_factory=dict)
    orthanc_url: str | None = None
    seconds: float | None = None


def demo_settings(settings: Settings, workdir: Path, orthanc: OrthancServer) -> Settings:
    """The user's settings with loopback ports, a temporary store and Orthanc as the PACS."""
    demo = settings.model_copy(deep=True)
    demo.dicom.host = "127.0.0.1"
    demo.dicom.port = orthanc.modalities["MEDGATE"][2]
    demo.dicom.study_idle_seconds = min(settings.dicom.study_idle_seconds, 2.0)
    demo.dicom.allowed_calling_aes = []
    demo.pacs.ae_title = orthanc.ae_title
    demo.pacs.host = "127.0.0.1"
    demo.pacs.port = orthanc.dicom_port
    demo.api.host = "127.0.0.1"
    demo.api.port = free_port()
    demo.storage.path = workdir / "medgate"
    demo.storage.database_url = None
    demo.storage.min_free_mb = 0
    demo.audit.path = None
    demo.models.path = Path(settings.models.path).resolve()
    if demo.serving.ray_num_cpus is None:
        demo.serving.ray_num_cpus = 2
    return demo


def make_studies(count: int) -> list[tuple[bytes, DemoStudy]]:
    """``count`` phantom radiographs as Part 10 bytes, each with its ground truth."""
    from medgate.datasets.cxr_phantom import generate_phantom
    from medgate.datasets.phantom_dicom import phantom_to_dataset

    made: list[tuple[bytes, DemoStudy]] = []
    for number in range(count):
        seed = DEMO_SEED_BASE + number
        phantom = generate_phantom(seed, findings=DEMO_CASES[number % len(DEMO_CASES)])
        ds = phantom_to_dataset(phantom, namespace="medgate-demo")
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        made.append(
            (buffer.getvalue(), DemoStudy(seed, str(ds.StudyInstanceUID), dict(phantom.labels)))
        )
    return made


def _check_bundles(settings: Settings) -> list[str]:
    from medgate.serving.bundles import discover

    bundles, problems = discover(settings)
    wanted = {b for rule in settings.routing.rules for b in rule.bundles}
    present = sorted(wanted & set(bundles))
    if not present:
        detail = "; ".join(problems[:3])
        raise DemoError(
            f"no routed model bundle under {settings.models.path} (wanted one of "
            f"{', '.join(sorted(wanted))}). Build the demo bundles with `make models`."
            + (f" Problems: {detail}" if detail else "")
        )
    return present


def _results_in_orthanc(orthanc: OrthancServer, result: dict[str, Any]) -> bool:
    objects = result.get("result_objects") or []
    return bool(objects) and all(orthanc.find_instance(o["sop_instance_uid"]) for o in objects)


def run_demo(
    settings: Settings, *, studies: int = 4, keep: Path | None = None, timeout: float = 240.0
) -> bool:
    """Run the demo; True when every study ended ``done`` with its results in Orthanc."""
    from medgate.cli.gateway import Gateway

    present = _check_bundles(settings)
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="medgate-demo-")
    workdir = Path(keep or tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    medgate_port = free_port()
    orthanc = OrthancServer(
        workdir / "orthanc",
        modalities={"MEDGATE": (settings.dicom.ae_title, "127.0.0.1", medgate_port)},
    )
    gateway: Gateway | None = None
    t0 = time.monotonic()
    try:
        console.print(f"[bold]1/5[/] starting Orthanc (regional PACS) in {workdir} ...")
        orthanc.start()
        demo = demo_settings(settings, workdir, orthanc)
        console.print(
            f"[bold]2/5[/] starting medgate (Ray, Serve, DICOM, worker); "
            f"models: {', '.join(present)} ..."
        )
        gateway = Gateway(demo).start()
        console.print(f"      medgate API {gateway.api_url}  ({time.monotonic() - t0:.0f} s)")
        console.print(
            f"[bold]3/5[/] sending {studies} synthetic chest radiograph(s) "
            "to Orthanc, which forwards them to medgate ..."
        )
        made = make_studies(studies)
        ids = [orthanc.upload(data)["ID"] for data, _ in made]
        sent_at = time.monotonic()
        orthanc.post("/modalities/MEDGATE/store", json={"Resources": ids, "Synchronous": True})
        console.print("[bold]4/5[/] waiting for results in Orthanc ...")
        states = [study for _, study in made]
        _wait(gateway, orthanc, states, sent_at, timeout)
        console.print("[bold]5/5[/] results\n")
        for study in states:
            _print_study(study, demo)
        ok = all(s.status == "done" for s in states)
        console.print(
            f"\n{sum(s.status == 'done' for s in states)}/{len(states)} studies done in "
            f"{time.monotonic() - t0:.0f} s; Orthanc: {orthanc.url}/app/explorer.html"
        )
        return ok
    finally:
        console.print("stopping medgate and Orthanc ...")
        if gateway is not None:
            gateway.stop()
        orthanc.stop(graceful=tmp is None)  # a kept demo folder is opened again later
        if tmp is not None:
            tmp.cleanup()


def _wait(
    gateway: Any,
    orthanc: OrthancServer,
    states: list[DemoStudy],
    sent_at: float,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(states)
    while pending and time.monotonic() < deadline:
        for study in list(pending):
            row = gateway.index.studies.get(study.study_uid)
            if row is None:
                continue
            status = row.status
            if status in ("failed", "not-processed"):
                study.status, study.result = status, {"reason": row.reason}
                pending.remove(study)
            elif status == "done" and _results_in_orthanc(orthanc, row.result or {}):
                study.status, study.result = "done", row.result
                study.seconds = time.monotonic() - sent_at
                orthanc_id = orthanc.find_study(study.study_uid)
                study.orthanc_url = f"{orthanc.url}/app/explorer.html#study?uuid={orthanc_id}"
                pending.remove(study)
        time.sleep(0.5)
    for study in pending:
        study.status = "timeout"


def _print_study(study: DemoStudy, settings: Settings) -> None:
    truth = [label for label, value in study.truth.items() if value] or ["none"]
    console.print(
        f"[bold]study[/] seed {study.seed}  status [bold]{study.status}[/]"
        + (f"  ({study.seconds:.1f} s after sending)" if study.seconds else "")
    )
    console.print(f"  phantom truth : {', '.join(truth)}", highlight=False)
    result = study.result
    if study.status != "done":
        console.print(f"  reason        : {result.get('reason')}", highlight=False)
        return
    present = [
        f"{f['label']} {f['probability']:.2f}" for f in result.get("findings", []) if f["present"]
    ]
    console.print(
        f"  AI findings   : {', '.join(present) or 'none above threshold'}", highlight=False
    )
    for m in result.get("measurements", []):
        console.print(
            f"  measurement   : {m['name']['meaning']} = {m['value']:.3g} {m['unit']['value']}",
            highlight=False,
        )
    console.print(
        f"  priority      : [bold]{result.get('priority')}[/] "
        f"({'; '.join(result.get('reasons', []))})",
        highlight=False,
    )
    for statement in result.get("guidance", []):
        for language in settings.reports.languages:
            text = statement["text"].get(language)
            if text:
                console.print(f"  guidance [{language}] : {text}", highlight=False, markup=False)
    kinds = ", ".join(sorted({o["kind"] for o in result.get("result_objects", [])}))
    console.print(f"  in the PACS   : {kinds}  {study.orthanc_url}", highlight=False)
