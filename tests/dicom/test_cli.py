"""The DICOM commands of ``medgate`` against a running service and a real Orthanc."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medgate.cli.dicom_service import DicomService
from medgate.cli.main import app
from medgate.datasets.synthetic_series import ct_series
from medgate.dicom.orthanc import OrthancServer

runner = CliRunner()

NAME, PID = "Li^Wei", "PHI-0042"


def _config(tmp_path: Path, service: DicomService, orthanc: OrthancServer | None = None) -> Path:
    s = service.settings
    pacs = ""
    if orthanc:
        pacs = f'[pacs]\nae_title = "{orthanc.ae_title}"\nport = {orthanc.dicom_port}\n'

    path = tmp_path / "cli.toml"
    path.write_text(
        f'[dicom]\nae_title = "{s.dicom.ae_title}"\nhost = "127.0.0.1"\nport = {service.port}\n'
        f'[storage]\npath = "{s.storage.path}"\nmin_free_mb = 0\n'
        f'[audit]\nhash_key = "test-key"\n{pacs}'
    )
    return path


def test_send_echo_studies_outbox_find_pull(
    tmp_path: Path,
    service_factory: Callable[..., DicomService],
    orthanc_factory: Callable[..., OrthancServer],
    caplog,
) -> None:
    caplog.set_level(logging.INFO)
    service = service_factory()
    # Orthanc answers C-FIND / C-GET only from modalities it knows
    orthanc = orthanc_factory(modalities={"medgate": ("MEDGATE", "127.0.0.1", service.port)})
    config = _config(tmp_path, service, orthanc)
    files = ct_series(tmp_path / "s", 4, rows=16, columns=16, patient_name=NAME, patient_id=PID)

    result = runner.invoke(app, ["echo", f"MEDGATE@127.0.0.1:{service.port}", "-c", str(config)])
    assert result.exit_code == 0 and "success" in result.output
    result = runner.invoke(app, ["echo", "-c", str(config)])  # the configured PACS
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["echo", "NOPE", "-c", str(config)])
    assert result.exit_code == 2 and "AE@HOST:PORT" in result.output

    # send a folder (recursive) to medgate itself, then to Orthanc
    result = runner.invoke(app, ["send", str(tmp_path / "s"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "Success" in result.output and "4" in result.output
    assert service.index.instances.count() == 4
    target = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    result = runner.invoke(app, ["send", str(files[0]), "--to", target, "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert len(orthanc.get("/instances")) == 1

    result = runner.invoke(app, ["studies", "-c", str(config)])
    assert result.exit_code == 0 and "1 studies" in result.output
    result = runner.invoke(app, ["outbox", "-c", str(config)])
    assert result.exit_code == 0 and "0 objects" in result.output

    result = runner.invoke(app, ["find", "--modality", "CT", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 studies" in result.output and PID in result.output  # on screen, on purpose

    # C-GET the study back over the command's own association (after deleting it locally
    # would need a fresh store: here it is a duplicate, stored once)
    study = service.index.studies.list()[0].study_instance_uid
    result = runner.invoke(
        app, ["pull", "--study-uid", study, "--method", "get", "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "1 completed" in result.output
    assert service.index.instances.count() == 4

    # nothing identifying in the log records
    time.sleep(0.1)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert NAME not in logged and PID not in logged and study not in logged


def test_send_to_nobody_fails_cleanly(tmp_path: Path, service: DicomService) -> None:
    from medgate.core.ports import free_port

    config = _config(tmp_path, service)
    f = ct_series(tmp_path / "s", 1, rows=8, columns=8)[0]
    result = runner.invoke(
        app, ["send", str(f), "--to", f"X@127.0.0.1:{free_port()}", "-c", str(config)]
    )
    assert result.exit_code == 1
    assert "unreachable" in result.output


def test_late_instance_reopens_a_queued_study(
    tmp_path: Path, service_factory: Callable[..., DicomService]
) -> None:
    from medgate.dicom.net import self_peer
    from medgate.dicom.scu import store_files

    service = service_factory(dicom={"study_idle_seconds": 0.3})
    files = ct_series(tmp_path / "s", 3, rows=8, columns=8)
    store_files(service.settings, self_peer(service.settings), files[:2])
    study = service.index.studies.list()[0].study_instance_uid
    deadline = time.monotonic() + 10
    while service.index.studies.get(study).status != "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.index.studies.get(study).status == "queued"
    store_files(service.settings, self_peer(service.settings), files[2:])
    assert service.index.studies.get(study).status == "receiving"
    deadline = time.monotonic() + 10
    while service.index.studies.get(study).status != "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.index.studies.get(study).status == "queued"
    assert service.index.studies.get(study).instances == 3


def test_an_error_quoting_brackets_is_printed_not_taken_for_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """HAProxy's alerts quote '[/path/haproxy.cfg:95]'; rich read that as a closing tag and the
    error message turned into a MarkupError traceback."""
    import typer

    from medgate.cli.common import fail

    with pytest.raises(typer.Exit) as stopped:
        fail("could not start: Binding [/tmp/h/haproxy.cfg.medgate:95] for proxy stats [x]", 1)
    assert stopped.value.exit_code == 1
    assert "[/tmp/h/haproxy.cfg.medgate:95] for proxy stats [x]" in capsys.readouterr().err
