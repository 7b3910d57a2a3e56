"""The referral store on SQLite and PostgreSQL: the state machine, one history row per change,
idempotent creation from one CDS suggestion, and two concurrent answers of which one wins."""

from __future__ import annotations

import threading

import pytest

from medgate.store.db import Index
from medgate.store.referrals import (
    Evidence,
    IllegalTransition,
    MissingField,
    NewReferral,
    ReferralStore,
    StaleReferral,
)

NEW = NewReferral(
    site="clinic-a",
    patient_id="A-1",
    patient_key="h:0011223344556677",
    urgency="urgent",
    reason="BP 186/114 mmHg",
    requester="token:h:aa",
    evidence=[Evidence("score", "NEWS2", "3")],
    origin="cds",
    origin_ref="suggestion-1",
)


@pytest.fixture
def store(database_url: str) -> ReferralStore:
    return ReferralStore(Index(database_url).engine)


def test_states_history_and_idempotent_creation(store: ReferralStore) -> None:
    made, created = store.create(NEW, ["desk"])
    again, created_again = store.create(NEW, ["desk"])
    assert created and not created_again and again.id == made.id
    with pytest.raises(IllegalTransition):
        store.transition(made.id, "completed", "h", [], follow_up_plan="p")
    with pytest.raises(MissingField):
        store.transition(made.id, "rejected", "h", [])
    store.transition(made.id, "accepted", "h", ["clinic-mail"], performer="Dept")
    with pytest.raises(MissingField):
        store.transition(made.id, "completed", "h", ["clinic-mail"], follow_up_plan="  ")
    done = store.transition(made.id, "completed", "h", ["clinic-mail"], follow_up_plan="plan")
    assert [e.status for e in done.events] == ["requested", "accepted", "completed"]
    assert [e.notify_side for e in done.events] == ["hospital", "clinic", "clinic"]
    assert done.events[0].notify_channels == ["desk"]
    assert done.events[-1].notify_payload == {
        "kind": "referral",
        "referral": made.id,
        "status": "completed",
        "urgency": "urgent",
        "site": "clinic-a",
        "to": "clinic",
    }
    assert done.version == 3 and done.performer == "Dept" and done.evidence == NEW.evidence
    assert [r.id for r in store.find(patient_key=NEW.patient_key)] == [made.id]
    assert store.find(site="clinic-b") == []
    with pytest.raises(KeyError):
        store.transition("missing", "accepted", "h", [])


def test_two_concurrent_answers_one_wins(store: ReferralStore) -> None:
    made, _ = store.create(NEW, [])
    results: list[str] = []
    barrier = threading.Barrier(2)

    def answer(status: str) -> None:
        barrier.wait()
        try:
            store.transition(made.id, status, "h", [], reason="full", expected_version=made.version)
            results.append(status)
        except (StaleReferral, IllegalTransition):
            results.append("refused")

    threads = [threading.Thread(target=answer, args=(s,)) for s in ("accepted", "rejected")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results.count("refused") == 1
    final = store.get(made.id)
    assert final is not None and final.version == 2 and len(final.events) == 2
    assert final.status in ("accepted", "rejected") and final.status in results


def test_one_suggestion_accepted_twice_at_once_makes_one_referral(database_url: str) -> None:
    """Two gateway processes share the database: each has its own store, both race to create."""
    stores = [ReferralStore(Index(database_url).engine) for _ in range(2)]
    barrier = threading.Barrier(2)
    made: list[tuple[str, bool]] = []

    def create(store: ReferralStore) -> None:
        barrier.wait()
        referral, created = store.create(NEW, [])
        made.append((referral.id, created))

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 2 and len({rid for rid, _ in made}) == 1
    assert sorted(created for _, created in made) == [False, True]
