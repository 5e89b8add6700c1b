"""``copy_ledger``: a whole ledger, history included, moved between backends (SQLite ⇄ PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kling_budget.budgets import Budget
from kling_budget.errors import BudgetExceededError, ConfigurationError
from kling_budget.ledger import Connection, Ledger, Pack, open_backend, open_ledger
from kling_budget.ledger.copy import copy_ledger
from kling_budget.types import AlertEvent, AlertKind, Attribution, PackType

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALICE = Attribution(project="marketing", user="alice", model="kling-v2-6", tags=("launch",))
BOB = Attribution(project="ads", user="bob", model="kling-v2-5-turbo")


@contextmanager
def _url(kind: str, tmp_path: Path, name: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{name}.db'}"
        return
    from tests.pgutil import fresh_postgres_url

    with fresh_postgres_url() as url:
        yield url


def populate(ledger: Ledger) -> None:
    """Budgets, packs, and jobs in every state, over two months."""
    ledger.set_budget(Budget.create("account", limit_units=1000))
    ledger.set_budget(Budget.create("marketing", project="marketing", limit_units=30, alert_at="50,80"))
    ledger.set_budget(Budget.create("alice-daily", project="marketing", user="alice", period="daily", limit_usd=3))
    ledger.add_pack(
        Pack(
            name="spring",
            pack_type=PackType.VIDEO,
            units_milli=20_000,
            price_nano=2_000_000_000,
            starts_at=NOW - timedelta(days=30),
            expires_at=NOW + timedelta(days=60),
        )
    )
    for month in (NOW - timedelta(days=31), NOW):
        for i in range(8):
            key = f"{month:%m}-{i}"
            who = ALICE if i % 2 else BOB
            try:
                ledger.reserve(key, units_milli=2500, pack_type=PackType.VIDEO, attribution=who, now=month)
            except BudgetExceededError:
                continue
            if i % 4 == 1:
                ledger.mark_submitted(key, task_id=f"task-{key}")
                ledger.commit(key, units_milli=3000, now=month)  # with overage
            elif i % 4 == 2:
                ledger.release(key, reason="failed", now=month)
            elif i % 4 == 3:
                ledger.commit(key, now=month)
        ledger.record(f"{month:%m}-rec", units_milli=1000, pack_type=PackType.IMAGE, attribution=BOB, now=month)
    with pytest.raises(BudgetExceededError):
        ledger.reserve("too-big", units_milli=900_000, pack_type=PackType.VIDEO, attribution=ALICE, now=NOW)


def snapshot(ledger: Ledger) -> dict[str, object]:
    """Everything a user can see of a ledger."""
    return {
        "budgets": [(b.name, b.scope, b.limit_units_milli, b.limit_usd_nano) for b in ledger.list_budgets()],
        "status": [(s.budget.name, s.counters) for s in ledger.statuses(now=NOW)],
        "packs": ledger.list_packs(),
        "reservations": ledger.list_reservations(limit=1000),
        "alerts": [(a.dedupe_key, a.kind) for a in ledger.recent_alerts(limit=1000)],
        "usage": ledger.usage(start=NOW - timedelta(days=90), end=NOW + timedelta(days=1), group_by=("project", "day")),
    }


@pytest.mark.parametrize(
    ("source_kind", "destination_kind"),
    [("sqlite", "postgresql"), ("postgresql", "sqlite"), ("sqlite", "sqlite")],
)
def test_copy_keeps_everything_and_the_destination_goes_on(
    tmp_path: Path, source_kind: str, destination_kind: str
) -> None:
    """Every row, id and entry order arrives; the copy verifies; new ids do not collide afterwards."""
    with ExitStack() as stack:
        source_url = stack.enter_context(_url(source_kind, tmp_path, "src"))
        destination_url = stack.enter_context(_url(destination_kind, tmp_path, "dst"))
        source = open_ledger(source_url, clock=lambda: NOW)
        populate(source)
        before = snapshot(source)
        entries = source.backend.run(
            lambda c: c.fetchall("SELECT seq, reservation_id, kind FROM entries ORDER BY seq"), write=False
        )
        destination_backend = open_backend(destination_url)
        report = copy_ledger(source.backend, destination_backend)
        assert report.ok, report.verify
        assert report.rows["entries"] == len(entries) > 20
        assert report.rows["budgets"] == 3 and report.rows["packs"] == 1
        destination = Ledger(destination_backend, clock=lambda: NOW)
        assert snapshot(destination) == before
        copied = destination.backend.run(
            lambda c: c.fetchall("SELECT seq, reservation_id, kind FROM entries ORDER BY seq"), write=False
        )
        assert [tuple(r) for r in copied] == [tuple(r) for r in entries]
        # Identity sequences continue past the copied ids.
        destination.set_budget(Budget.create("new-one", project="new", limit_units=5))
        destination.reserve("after-copy", units_milli=1000, pack_type=PackType.VIDEO, attribution=ALICE)
        assert destination.emit_alert(AlertEvent(kind=AlertKind.THRESHOLD, message="m", dedupe_key="after-copy"))
        assert destination.verify().ok
        if destination_kind == "postgresql":
            _assert_sequences_past_ids(destination)
        source.close()
        destination.close()


def _assert_sequences_past_ids(ledger: Ledger) -> None:
    """Every identity sequence of the destination hands out ids above the copied ones."""
    from kling_budget.ledger.copy import identity_columns

    def check(conn: Connection) -> list[tuple[str, int, int]]:
        found = []
        for table, column in identity_columns(conn):
            row = conn.fetchone(
                f"SELECT nextval(pg_get_serial_sequence(?, ?)), COALESCE(MAX({column}), 0) FROM {table}",
                (table, column),
            )
            assert row is not None
            found.append((table, int(row[0]), int(row[1])))
        return found

    found = ledger.backend.run(check)
    assert {t for t, _, _ in found} >= {"budgets", "packs", "entries", "alert_events"}
    assert all(next_id > max_id for _, next_id, max_id in found), found


def test_copy_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    """Copying over an existing ledger would mix two histories: refused, nothing written."""
    source = open_ledger(f"sqlite:///{tmp_path / 'a.db'}")
    source.set_budget(Budget.create("a", limit_units=1))
    target = open_ledger(f"sqlite:///{tmp_path / 'b.db'}")
    target.set_budget(Budget.create("b", limit_units=1))
    with pytest.raises(ConfigurationError, match="not empty"):
        copy_ledger(source.backend, target.backend)
    assert [b.name for b in target.list_budgets()] == ["b"]
    with pytest.raises(ConfigurationError, match="same ledger"):
        copy_ledger(source.backend, source.backend)
    source.close()
    target.close()
