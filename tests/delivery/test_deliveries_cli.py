"""``medgate deliveries``: the sites' delivery queue on the command line, by status and study."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medgate.cli.main import app
from medgate.store.db import Index
from medgate.store.deliveries import DeliveryStore, NewDelivery

runner = CliRunner()


def _message(study: str, destination: str, status: str = "pending") -> NewDelivery:
    return NewDelivery(
        message_id=f"{study}-{destination}",
        study_instance_uid=study,
        site="clinic-a",
        destination=destination,
        channel="hl7" if destination == "his" else "fhir",
        result_status="P",
        payload="MSH|...",
        status=status,
        error=None if status == "pending" else "AE: application error",
    )


def test_deliveries_lists_the_queue_by_status_and_study(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "medgate.toml"
    config.write_text(f'[storage]\npath = "{store}"\n[audit]\nhash_key = "test-key"\n')
    index = Index(f"sqlite:///{store / 'index.sqlite'}")
    try:
        queued = DeliveryStore(index.engine).enqueue(
            [
                _message("1.2.3.1", "his"),
                _message("1.2.3.1", "fhir-a"),
                _message("1.2.3.2", "his", status="dead-letter"),
            ]
        )
        assert queued == 3
    finally:
        index.close()

    every = runner.invoke(app, ["deliveries", "-c", str(config)], env={"COLUMNS": "250"})
    assert every.exit_code == 0, every.output
    assert "3 messages" in every.output and "fhir-a" in every.output
    dead = runner.invoke(
        app, ["deliveries", "--status", "dead-letter", "-c", str(config)], env={"COLUMNS": "250"}
    )
    assert dead.exit_code == 0 and "1 messages" in dead.output
    assert "1.2.3.2" in dead.output and "application error" in dead.output
    one_study = runner.invoke(
        app, ["deliveries", "--study", "1.2.3.1", "-c", str(config)], env={"COLUMNS": "250"}
    )
    assert one_study.exit_code == 0 and "2 messages" in one_study.output
    bad = runner.invoke(app, ["deliveries", "--status", "lost", "-c", str(config)])
    assert bad.exit_code == 2 and "dead-letter" in bad.output
