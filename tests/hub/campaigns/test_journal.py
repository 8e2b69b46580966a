"""The acknowledgement journal: live workers are left alone, dead ones are read back, files rotate
and disappear once settled."""

from __future__ import annotations

import os

from hub.campaigns import journal as journal_module
from hub.campaigns.journal import Journal, dead_journals


def kill(journal: Journal) -> None:
    """What SIGKILL does to a journal: the locks go, the files stay."""
    for entry in list(journal._files.values()):
        os.close(entry.fd)
    journal._files.clear()


def test_a_live_workers_journal_is_not_taken_over(tmp_path):
    alive = Journal(tmp_path, "alive")
    alive.started("c", 1, 1)
    assert list(dead_journals(tmp_path, "me")) == []
    alive.close()


def test_a_dead_workers_journal_is_read_back(tmp_path):
    dead = Journal(tmp_path, "dead")
    gen = dead.started("c", 1, 1)
    dead.accepted(gen, "c", 1, 1, "gateway id\nwith a break", 1748768400.25)
    dead.started("c", 2, 1)
    dead.started("t", 3, 2)
    kill(dead)
    with (tmp_path / "dead.0.journal").open("ab") as handle:
        handle.write(b'A c 9 1 ["torn')  # a write that never completed
    found = list(dead_journals(tmp_path, "me"))
    assert len(found) == 1
    record = found[0]
    assert record.worker_id == "dead"
    assert set(record.accepted) == {("c", 1, 1)}
    assert record.accepted[("c", 1, 1)].provider_id == "gateway id with a break"
    assert record.accepted[("c", 1, 1)].at == 1748768400.25
    assert record.in_doubt == {("c", 2, 1), ("t", 3, 2)}
    record.discard()
    assert list(tmp_path.iterdir()) == []


def test_files_rotate_and_are_deleted_once_settled(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 20)
    journal = Journal(tmp_path, "w")
    gens = []
    for n in range(6):
        gen = journal.started("c", n, 1)
        journal.accepted(gen, "c", n, 1, f"<cd{n}.x@y>", 1.0)
        gens.append(gen)
    assert len(set(gens)) > 1 and len(list(tmp_path.iterdir())) == len(set(gens))
    journal.settled(gens[:-1])
    # Older files go once everything in them is settled; the current one stays open.
    assert [p.name for p in tmp_path.iterdir()] == [f"w.{gens[-1]}.journal"]
    assert journal.outstanding == 1
    journal.close()  # unsettled: kept for the next start
    assert [p.name for p in tmp_path.iterdir()] == [f"w.{gens[-1]}.journal"]
    found = list(dead_journals(tmp_path, "other"))
    assert set(found[0].accepted) == {("c", 5, 1)}
