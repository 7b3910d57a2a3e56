"""Two medgate instances (two ``medgate serve`` processes) sharing one PostgreSQL database and one
storage folder, each receiving on its own DICOM port and each working, on one local Ray cluster
(``ray start --head``) whose Serve application and HTTP proxy they share. One is killed with -9
mid-run; the other finishes its work: every study is processed once and its results reach the
PACS (a real Orthanc) once. The lease is the default one (``serving.job_lease_seconds``, renewed
by a heartbeat): the studies the killed instance held must be done by the other within
``TAKEOVER_LIMIT_S``, and the test prints the takeover time it saw.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.support.configs import settings_to_toml
from tests.support.serve_process import RAY_TOKEN_ENV, ServeProcess
from tests.support.serve_process import ray_node_started as _started
from tests.support.serving import (
    phantom_bytes,
    serving_overrides,
    study_uid_of,
    wait_for,
    write_bundle,
)
from tests.support.storescu import storescu, storescu_successes

from medgate.core.config import Settings
from medgate.core.ports import free_port
from medgate.dicom.orthanc import OrthancServer
from medgate.store.db import Index
from medgate.store.schema import jobs as jobs_table
from medgate.store.studies import StudyRow

STUDIES = 50
TAKEOVER_LIMIT_S = 60.0  # issue 24: a dead node delays no study by more than a minute


def _study(index: Index, uid: str) -> StudyRow:
    row = index.studies.get(uid)
    assert row is not None, uid
    return row


def _results(index: Index, uid: str) -> dict[str, Any]:
    result = _study(index, uid).result
    assert result is not None, uid
    return result


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """One local Ray head node (2 CPUs, token authentication as tests/serving's cluster) that
    both instances join; stopped by SIGTERM afterwards."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray_bin, "the ray CLI is not installed in the virtualenv"
    port = free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="mgray-", dir="/tmp"))  # short socket paths
    env = {
        **os.environ,
        "RAY_ADDRESS": "",
        **RAY_TOKEN_ENV,
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",
    }
    log = tmp_path / "ray-head.log"
    with open(log, "ab") as out:
        head = subprocess.Popen(
            [
                ray_bin,
                "start",
                "--head",
                "--block",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--object-store-memory=100000000",
                "--disable-usage-stats",
                "--include-dashboard=false",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={ray_tmp}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: _started(log, head), 90, 0.5, "Ray head")
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(10)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _instance_settings(
    settings_factory: Callable[..., Settings],
    bundle_root: Path,
    name: str,
    *,
    store: Path,
    pg_url: str,
    api_port: int,
    orthanc: OrthancServer,
) -> Settings:
    sections = serving_overrides(bundle_root)
    sections["dicom"] = {"ae_title": name, "port": free_port(), "study_idle_seconds": 1.0}
    sections["storage"] = {"path": str(store), "database_url": pg_url, "min_free_mb": 0}
    # One audit trail per instance: a hash chain has one writer.
    sections["audit"] = {"path": str(store.parent / f"audit-{name}.jsonl"), "hash_key": "k"}
    sections["api"] = {"port": api_port}  # the cluster's one Serve HTTP proxy
    sections["pacs"] = {
        "ae_title": orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
    }
    assert "job_lease_seconds" not in sections["serving"]  # the default lease is under test
    sections["routing"]["max_attempts"] = 3
    return settings_factory(**sections)


def _audit_events(path: Path, event: str) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == event]


def test_two_instances_share_the_work_and_survive_a_kill_9(
    ray_head: str,
    pg_url: str,
    settings_factory: Callable[..., Settings],
    orthanc_factory: Callable[..., OrthancServer],
    tmp_path: Path,
) -> None:
    bundle_root = tmp_path / "bundles"
    write_bundle(bundle_root, "tiny_cxr")
    write_bundle(bundle_root, "broken_model", broken=True)
    orthanc = orthanc_factory()
    store = tmp_path / "shared" / "store"
    api_port = free_port()
    names = ("MEDGATE_A", "MEDGATE_B")
    settings = {
        n: _instance_settings(
            settings_factory,
            bundle_root,
            n,
            store=store,
            pg_url=pg_url,
            api_port=api_port,
            orthanc=orthanc,
        )
        for n in names
    }
    configs = {}
    for n, s in settings.items():
        configs[n] = tmp_path / f"{n}.toml"
        configs[n].write_text(settings_to_toml(s))
    url = f"http://127.0.0.1:{api_port}"
    children = {
        n: ServeProcess(configs[n], ray_head, tmp_path / f"serve-{n}.log", RAY_TOKEN_ENV)
        for n in names
    }
    index = Index(pg_url)
    try:
        children["MEDGATE_A"].start().wait_ready(url)
        children["MEDGATE_B"].start().wait_ready(url)

        folder = tmp_path / "studies"
        folder.mkdir()
        files: list[Path] = []
        for i in range(STUDIES):
            path = folder / f"{i:02d}.dcm"
            path.write_bytes(phantom_bytes(1000 + i, namespace="medgate-pg-two"))
            files.append(path)
        uids = [study_uid_of(p.read_bytes()) for p in files]
        assert len(set(uids)) == STUDIES

        # both receive at once: the even studies to A, the odd ones to B
        outputs: dict[str, str] = {}

        def send(name: str, part: list[Path]) -> None:
            s = settings[name]
            done = storescu(s.dicom.port, part, aec=name)
            outputs[name] = done.stdout + done.stderr

        threads = [
            threading.Thread(target=send, args=(n, files[k::2])) for k, n in enumerate(names)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        for k, n in enumerate(names):
            assert len(storescu_successes(outputs[n])) == len(files[k::2]), outputs[n][-2000:]

        engine = sa.create_engine(pg_url)
        ON_A = sa.select(jobs_table.c.study_instance_uid).where(
            jobs_table.c.status == "processing", jobs_table.c.claimed_by.like("%:MEDGATE_A:%")
        )

        done_by_a = sa.select(sa.func.count()).where(
            jobs_table.c.status == "done", jobs_table.c.claimed_by.like("%:MEDGATE_A:%")
        )

        def a_working_mid_run() -> bool:
            # A has finished some studies and holds others: kill it mid-run, not at its start
            with engine.connect() as conn:
                return (
                    int(conn.execute(done_by_a).scalar_one()) >= 3
                    and int(conn.execute(ON_A.with_only_columns(sa.func.count())).scalar_one()) > 0
                )

        # A is frozen (SIGSTOP) while it holds a job, then killed: between a check and a bare
        # kill -9, A could finish the very job it held, and the kill would hit nothing.
        process_a = children["MEDGATE_A"].process
        assert process_a is not None
        while True:
            wait_for(a_working_mid_run, 120, 0.02, "instance A mid-run")
            process_a.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()  # A does no more work (and renews no lease) from here
            time.sleep(1.0)  # a commit A sent just before the stop lands before we look
            with engine.connect() as conn:
                held = [r[0] for r in conn.execute(ON_A)]
            if held:
                break
            process_a.send_signal(signal.SIGCONT)  # it finished that job meanwhile: again
        with engine.connect() as conn:
            finished_by_a = int(conn.execute(done_by_a).scalar_one())
        children["MEDGATE_A"].kill9()
        with engine.connect() as conn:
            killed = [r[0] for r in conn.execute(ON_A)]
        if sorted(killed) != sorted(held):
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(jobs_table).where(jobs_table.c.study_instance_uid.in_(held))
                ).all()
            raise AssertionError(f"the kill must hit the jobs A held in processing: {rows}")

        def done(study_uids: list[str]) -> bool:
            rows = [index.studies.get(u) for u in study_uids]
            return all(r is not None and r.status == "done" for r in rows)

        wait_for(lambda: done(killed), 2 * TAKEOVER_LIMIT_S, 0.2, "A's studies done by B")
        takeover_s = time.monotonic() - stopped
        wait_for(lambda: done(uids), 240, 0.5, "every study done by the surviving instance")
        all_done_s = time.monotonic() - stopped
        lease_s = settings["MEDGATE_B"].serving.job_lease_seconds
        print(
            f"\ntakeover: {len(killed)} study(ies) held by the killed instance done by the other"
            f" {takeover_s:.1f} s after it stopped (lease {lease_s:.0f} s, default);"
            f" all {STUDIES} studies done after {all_done_s:.1f} s"
        )
        assert takeover_s <= TAKEOVER_LIMIT_S, f"takeover took {takeover_s:.1f} s"

        # exactly once: one job per study, done; killed jobs re-claimed after their lease
        with engine.connect() as conn:
            jobs = conn.exec_driver_sql(
                "SELECT study_instance_uid, status, attempts, claimed_by FROM jobs"
            ).all()
        per_study = collections.Counter(j[0] for j in jobs)
        assert set(per_study) == set(uids) and set(per_study.values()) == {1}, per_study
        assert {j[1] for j in jobs} == {"done"}
        by_uid = {j[0]: j for j in jobs}
        for uid in killed:
            assert by_uid[uid][2] >= 2 and "MEDGATE_B" in by_uid[uid][3], by_uid[uid]
        finishers = collections.Counter(j[3].split(":")[1] for j in jobs)
        # both worked: A's finished studies stay A's, B did the rest and A's cut-off ones
        assert finishers["MEDGATE_A"] >= finished_by_a >= 3, finishers
        assert finishers["MEDGATE_B"] >= len(killed), finishers

        # one set of results per study, delivered once, no duplicate SOP Instance UIDs
        expected: set[str] = set()
        for uid in uids:
            objects = _results(index, uid)["result_objects"]
            assert objects
            assert sum(o.get("kind") == "sr" for o in objects) == 1, objects
            expected |= {o["sop_instance_uid"] for o in objects}
        outbox = index.outbox.list()
        assert sorted(r.sop_instance_uid for r in outbox) == sorted(expected)

        wait_for(
            lambda: all(r.status == "sent" for r in index.outbox.list()),
            120,
            0.5,
            "every result sent",
        )
        in_orthanc = orthanc.get("/instances")
        assert len(in_orthanc) == len(expected), (len(in_orthanc), len(expected))
        for uid in uids:
            study = orthanc.study_instances(uid)
            assert len(study) == len(_results(index, uid)["result_objects"])
        sent = [
            e["instance"]  # keyed hash of the SOP Instance UID
            for n in names
            for e in _audit_events(store.parent / f"audit-{n}.jsonl", "result-sent")
        ]
        duplicates = {k: v for k, v in collections.Counter(sent).items() if v > 1}
        assert not duplicates, f"{len(duplicates)} result(s) sent more than once"
        assert len(sent) >= len(expected) - len(killed) * 3  # A's last sends may be unrecorded
        engine.dispose()
    finally:
        index.close()
        for child in children.values():
            child.stop()
