"""Proof under faults, whole gateway (issue #8): kill -9 of ``medgate serve`` while studies are
in ``processing`` and a C-STORE run is in flight, both at once.

``medgate serve`` runs as a child process with its own local Ray, so each kill -9 takes the
receiver, the study assembler, the worker, the outbox sender, the HTTP API and Ray down at once.
After each kill the gateway is started again from what is on disk, and at the end:

* every instance that got a C-STORE success status is stored intact (index row, sha256, data set
  bytes identical to what was sent), nothing is half-written;
* every study ends ``done``, and the PACS (real Orthanc, counted over its REST API) holds exactly
  one set of results for it: the SOP Instance UIDs in Orthanc are exactly the study's result
  objects, none missing, none twice;
* a study cut off in ``processing`` was run again (a job with two attempts or more);
* no process of a killed gateway (Ray's included) outlives it.

The injection counts join ``faults_helpers.INJECTIONS`` (one report, one minimum).
Each kill is aimed at a moment when a study is ``processing`` and a 6-study C-STORE run, paced
at 0.4 s an instance like a slow modality, is still sending (both seen at one 2 ms poll); it
counts once. Short form: one kill (two gateway starts; more if a kill missed processing or the
sends); ``--long``: 20 kills.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.filereader import dcmread
from tests.support import serving as helpers
from tests.support.configs import settings_to_toml
from tests.support.faults import (
    BackgroundSend,
    assert_store_consistent,
    repetitions,
    send_all,
    sop_uid,
)
from tests.support.faults import count_injection as _count
from tests.support.gateway_process import GatewayProcess, wait_for

from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer
from medgate.store.db import Index

PROCESSING_STUDIES = 3
SENT_STUDIES = 6
SEND_PACE_SECONDS = 0.4  # 6 studies: the run stays in flight ~2.4 s, past the 1 s study idle


def _gateway_settings(
    settings_factory: Callable[..., Settings], bundles: Path, orthanc: OrthancServer, port: int
) -> Settings:
    sections: dict[str, dict[str, Any]] = helpers.serving_overrides(bundles)
    sections["routing"]["rules"] = [
        r for r in sections["routing"]["rules"] if r["name"] != "broken"
    ]
    sections["routing"]["max_attempts"] = 3
    sections["serving"].update({"poll_seconds": 0.05, "ray_num_cpus": 2, "object_store_mb": 100})
    sections["dicom"] = {"port": port, "study_idle_seconds": 1.0}
    sections["pacs"] = {
        "ae_title": orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "send_backoff_seconds": 0.2,
        "send_backoff_max_seconds": 2.0,
    }
    sections["api"] = {"port": free_port()}
    return settings_factory(**sections)


def _phantoms(folder: Path, first_seed: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for seed in range(first_seed, first_seed + count):
        path = folder / f"{seed}.dcm"
        path.write_bytes(helpers.phantom_bytes(seed, namespace="medgate-trust-gateway"))
        files.append(path)
    return files


def _study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _status(index: Index, study: str) -> str | None:
    row = index.studies.get(study)
    return None if row is None else str(row.status)


def _orthanc_sops(orthanc: OrthancServer, study: str) -> list[str]:
    return sorted(
        str(orthanc.get(f"/instances/{item['ID']}/simplified-tags")["SOPInstanceUID"])
        for item in orthanc.study_instances(study)
    )


def test_kill9_gateway_during_sends_and_processing(
    settings_factory: Callable[..., Settings],
    orthanc_factory: Callable[..., OrthancServer],
    tmp_path: Path,
    long_run: bool,
) -> None:
    target = repetitions(20, 1, long_run)  # kills
    rng = random.Random(88)
    bundles = tmp_path / "bundles"
    helpers.write_bundle(bundles, "tiny_cxr")
    port = free_port()
    orthanc = orthanc_factory(modalities={"MEDGATE": ("MEDGATE", "127.0.0.1", port)})
    settings = _gateway_settings(settings_factory, bundles, orthanc, port)
    config = tmp_path / "medgate.toml"
    config.write_text(settings_to_toml(settings))
    api_url = f"http://127.0.0.1:{settings.api.port}"
    gateway = GatewayProcess(config, api_url, tmp_path)
    acknowledged: set[Path] = set()
    studies: set[str] = set()
    cut_in_processing: set[str] = set()
    cut_sends = 0  # instances of a batch not acknowledged because of a kill
    started = time.monotonic()
    kills = 0
    index: Index | None = None
    store_root = Path(settings.storage.path)
    try:
        gateway.start()
        index = Index(settings.storage.resolved_database_url(), create=False)
        while kills < target or not (cut_in_processing and cut_sends):
            assert kills < target + 3, "the kills kept missing processing or the sends"
            # studies that will be in `processing` at the kill ...
            batch = _phantoms(tmp_path / f"p{kills}", 1000 * kills, PROCESSING_STUDIES)
            sent = BackgroundSend(port, batch).start().join()
            assert len(sent.acknowledged()) == len(batch), sent.report.results
            acknowledged.update(batch)
            uids = [_study_uid(p) for p in batch]
            studies.update(uids)
            wait_for(
                lambda uids=uids: any(_status(index, u) == "processing" for u in uids),
                90,
                0.005,
                "a study in processing",
            )
            # ... and a C-STORE run in flight, paced like a slow modality so that it is still
            # sending when the kill comes, however fast the machine
            sending = _phantoms(tmp_path / f"s{kills}", 1000 * kills + 500, SENT_STUDIES)
            sending_uids = [_study_uid(p) for p in sending]
            studies.update(sending_uids)
            sender = BackgroundSend(port, sending, pace_seconds=SEND_PACE_SECONDS).start()
            wait_for(
                lambda sending=sending: index.instances.get(sop_uid(sending[0])) is not None,
                60,
                0.002,
                "the first instance stored",
            )
            # the kill comes at a poll that sees both at once: a study in processing (one of
            # the first batch, or a study of this run that its idle time has just closed) and
            # the run still sending; a random extra delay varies the moment within that overlap
            round_studies = uids + sending_uids
            overlap_seen = False
            while sender.in_flight():
                if any(_status(index, u) == "processing" for u in round_studies):
                    overlap_seen = True
                    break
                time.sleep(0.002)
            if overlap_seen:
                time.sleep(rng.uniform(0.0, 0.005))
            survivors = gateway.kill9()
            kills += 1
            _count("kill9-gateway")
            assert not survivors, f"processes outlived the killed gateway: {survivors}"
            cut_in_processing |= {u for u in round_studies if _status(index, u) == "processing"}
            sender.join()
            cut_sends += len(sending) - len(sender.acknowledged())
            acknowledged.update(sender.acknowledged())
            gateway.start()  # recovery (temporary files of cut-off writes) runs first
            assert_store_consistent(store_root, index, sorted(acknowledged))
            # the sending side retries what was not acknowledged
            rest = [p for p in sending if p not in acknowledged]
            assert not send_all(port, rest)
            acknowledged.update(rest)

        assert cut_in_processing, "no kill hit a study in processing"
        assert_store_consistent(store_root, index, sorted(acknowledged))

        def all_done() -> bool:
            return all(_status(index, u) == "done" for u in studies)

        wait_for(all_done, 240, 0.5, "every study done after the restarts")
        for study in sorted(studies):
            row = index.studies.get(study)
            expected = sorted(o["sop_instance_uid"] for o in row.result["result_objects"])
            assert expected, study
            wait_for(
                lambda study=study, expected=expected: _orthanc_sops(orthanc, study) == expected,
                120,
                0.5,
                "exactly the study's one set of results in Orthanc",
            )
        for study in cut_in_processing:
            assert max(job.attempts for job in index.jobs.of_study(study)) >= 2
        outbox = index.outbox.list()
        assert outbox and all(r.status == "sent" for r in outbox)
        assert len(orthanc.get("/instances")) == len(outbox)  # nothing else, nothing twice
        assert gateway.stop() == 0, gateway.log.read_text(errors="replace")[-3000:]
    finally:
        gateway.kill9(settle=20)
        if index is not None:
            index.close()
    print(
        f"\ngateway kill -9: {kills} kill(s), starts {gateway.start_seconds} s, "
        f"{len(studies)} studies, {len(cut_in_processing)} cut in processing, {cut_sends} "
        f"instances cut off by kills during sends, {time.monotonic() - started:.0f} s"
    )
