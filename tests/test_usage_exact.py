"""Usage over any range is exact: whole quarter hours from the roll-up, partial ones from the reservations.

Every range query of the product (usage, reports, forecasts, dashboard, admin API, reconcile) goes through
``Ledger.usage``; these tests hold it to a fold of the append-only entries over random instants, zones and
DST days, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_budget import CostTracker
from kling_budget.ledger import Ledger, open_ledger
from kling_budget.ledger.queries import split_range
from kling_budget.ledger.rows import BUCKET_MICROS
from kling_budget.types import Attribution, PackType
from kling_budget.windows import from_micros, to_micros, zone
from tests.conftest import FixedClock

MID_QUARTER = datetime(2026, 3, 10, 12, 7, 31, 123456, tzinfo=UTC)  # inside the 12:00-12:15 bucket


@pytest.fixture
def mid_clock() -> FixedClock:
    """A clock in the middle of a quarter hour, where a bucket-only sum goes wrong."""
    return FixedClock(MID_QUARTER)


def test_a_job_just_committed_shows_in_a_range_ending_inside_its_quarter_hour(
    ledger_url: str, mid_clock: FixedClock
) -> None:
    """reserve().commit() then usage over [now - 5 s, now + 1 s) has the job (it was [] before)."""
    with CostTracker(ledger_url, clock=mid_clock, alert_sinks=[]) as t:
        t.reserve(model="kling-v1-6", duration=5, mode="std", project_id="p").commit()
        now = mid_clock.now
        rows = t.usage(start=now - timedelta(seconds=5), end=now + timedelta(seconds=1))
    assert [(r.group, r.committed_milli, r.held_milli, r.jobs) for r in rows] == [({"project": "p"}, 2000, 0, 1)]


def test_the_edges_of_a_range_count_only_the_jobs_inside_it(ledger: Ledger, clock: FixedClock) -> None:
    """Jobs one microsecond either side of a range's edges, inside a quarter hour, are counted exactly."""
    start = datetime(2026, 3, 10, 12, 5, tzinfo=UTC)
    end = datetime(2026, 3, 10, 13, 40, 0, 500, tzinfo=UTC)
    one = timedelta(microseconds=1)
    at = {
        "before-start": start - one,
        "at-start": start,
        "whole-bucket": datetime(2026, 3, 10, 12, 30, tzinfo=UTC),
        "before-end": end - one,
        "at-end": end,
    }
    for key, instant in at.items():
        ledger.reserve(
            key, units_milli=1000, pack_type=PackType.VIDEO, attribution=Attribution(project=key), now=instant
        )
    ledger.commit("at-start", units_milli=1500)
    ledger.release("whole-bucket")
    ledger.reserve(
        "whole-held", units_milli=700, pack_type=PackType.VIDEO, attribution=Attribution(), now=at["whole-bucket"]
    )
    rows = ledger.usage(start=start, end=end, group_by=("project",))
    assert {r.group["project"]: (r.committed_milli, r.held_milli, r.jobs) for r in rows} == {
        "": (0, 700, 0),
        "at-start": (1500, 0, 1),
        "before-end": (0, 1000, 0),
    }
    inside_one_bucket = ledger.usage(start=start - one, end=start + one, group_by=("project",))
    assert {r.group["project"] for r in inside_one_bucket} == {"before-start", "at-start"}
    assert ledger.usage(start=start + one, end=start + 2 * one) == []


def test_split_range_covers_the_range_once() -> None:
    """Whole buckets and edge pieces tile [low, high) exactly, each edge inside the bucket it names."""
    b = BUCKET_MICROS
    assert split_range(0, 4 * b) == ((0, 4 * b), [])
    assert split_range(5, 4 * b - 5) == ((b, 3 * b), [(5, b, 0), (3 * b, 4 * b - 5, 3 * b)])
    assert split_range(5, 10) == (None, [(5, 10, 0)])
    assert split_range(b - 5, b + 5) == (None, [(b - 5, b, 0), (b, b + 5, b)])
    assert split_range(-b - 5, -b + 5) == (None, [(-b - 5, -b, -2 * b), (-b, -b + 5, -b)])


# ----------------------------------------------------------------------------- the property


ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",  # -03:30, with DST
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",  # +12:45 / +13:45
]
# DST changes of the zones above in 2026 (UTC): the days around them are where hours and days go wrong.
DST_INSTANTS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York spring forward
    datetime(2026, 3, 8, 5, 30, tzinfo=UTC),  # St John's spring forward
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Berlin spring forward
    datetime(2026, 4, 4, 15, tzinfo=UTC),  # Lord Howe falls back half an hour
    datetime(2026, 4, 4, 14, tzinfo=UTC),  # Chatham falls back
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Berlin falls back
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York falls back
]
ATTRIBUTIONS = [
    Attribution(project="p1", user="ann", model="kling-v2-6"),
    Attribution(project="p1", user="bob", model="kling-v1-6", tags=("launch",)),
    Attribution(project="p2", user="ann", api_key="k1", model="kling-v2-6", tags=("launch", "q4")),
    Attribution(),
]
GROUPINGS = ["project", "user", "api_key", "model", "pack_type", "tag", "hour", "day", "week", "month"]

instants = st.builds(
    lambda base, offset: base + timedelta(microseconds=offset),
    st.sampled_from(DST_INSTANTS),
    st.integers(-40 * 3600 * 10**6, 40 * 3600 * 10**6),
)
quarter_aligned = instants.map(lambda at: from_micros(to_micros(at) // BUCKET_MICROS * BUCKET_MICROS))
edges = st.one_of(instants, quarter_aligned)
jobs = st.lists(
    st.tuples(
        instants,
        st.sampled_from(range(len(ATTRIBUTIONS))),
        st.sampled_from([PackType.VIDEO, PackType.IMAGE]),
        st.integers(1, 20_000),
        st.sampled_from(["held", "submitted", "commit", "commit-more", "release", "record"]),
    ),
    max_size=8,
)


def _fold_entries(ledger: Ledger) -> list[dict[str, Any]]:
    """Each job's committed/held amounts, folded from the append-only entries alone (the reference)."""
    rows = ledger.backend.run(
        lambda conn: conn.fetchall(
            "SELECT e.reservation_id, e.kind, e.units_milli, e.usd_nano, r.reserved_at, r.project, r.user_id, "
            "r.api_key, r.model, r.pack_type, r.tags FROM entries e JOIN reservations r ON r.id = e.reservation_id "
            "ORDER BY e.seq"
        ),
        write=False,
    )
    jobs: dict[str, dict[str, Any]] = {}
    for key, kind, units, usd, at, project, user, api_key, model, pack_type, tags in rows:
        job = jobs.setdefault(
            key,
            {
                "at": int(at),
                "project": project,
                "user": user,
                "api_key": api_key,
                "model": model,
                "pack_type": pack_type,
                "tags": [t for t in tags.split(",") if t],
                "amounts": [0, 0, 0, 0, 0],
            },
        )
        amounts = job["amounts"]
        if kind == "reserve":
            amounts[1], amounts[3] = int(units), int(usd)
        elif kind in ("commit", "record"):
            amounts[:] = [int(units), 0, int(usd), 0, 1]
        elif kind == "release":
            amounts[:] = [0, 0, 0, 0, 0]
    return list(jobs.values())


def _label(group: str, at: int, tz_name: str, week_start: int) -> str:
    local = from_micros(at).astimezone(zone(tz_name))
    if group == "hour":
        return local.replace(minute=0, second=0, microsecond=0).isoformat(timespec="minutes")
    if group == "day":
        return local.date().isoformat()
    if group == "week":
        return (local.date() - timedelta(days=(local.weekday() - week_start) % 7)).isoformat()
    return local.strftime("%Y-%m")


def _expected(
    jobs: list[dict[str, Any]], low: int, high: int, group_by: list[str], tz_name: str, week_start: int, project: str
) -> dict[tuple[tuple[str, str], ...], tuple[int, ...]]:
    totals: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for job in jobs:
        if not low <= job["at"] < high or (project and job["project"] != project):
            continue
        for tag in (job["tags"] or [""]) if "tag" in group_by else [None]:
            key = tuple(
                (g, tag if g == "tag" else _label(g, job["at"], tz_name, week_start) if g in _TIME else job[g])
                for g in group_by
            )
            totals[key] = [a + b for a, b in zip(totals[key], job["amounts"], strict=True)]
    return {k: tuple(v) for k, v in totals.items() if any(v)}


_TIME = ("hour", "day", "week", "month")


def test_usage_equals_a_fold_of_the_entries_at_any_instant(ledger_url: str) -> None:
    """Random jobs and random ranges (instants to the microsecond, zones, DST days, groupings): usage equals
    the fold of the raw entries of the jobs reserved in the range."""
    separator = "&" if "?" in ledger_url else "?"
    ledger = open_ledger(ledger_url + (f"{separator}synchronous=NORMAL" if ledger_url.startswith("sqlite") else ""))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        new_jobs=jobs,
        bounds=st.tuples(edges, edges).filter(lambda b: b[0] != b[1]),
        group_by=st.lists(st.sampled_from(GROUPINGS), unique=True, max_size=3),
        tz_name=st.sampled_from(ZONES),
        week_start=st.integers(0, 6),
        project=st.sampled_from(["", "p1"]),
    )
    def check(
        new_jobs: list[tuple[datetime, int, PackType, int, str]],
        bounds: tuple[datetime, datetime],
        group_by: list[str],
        tz_name: str,
        week_start: int,
        project: str,
    ) -> None:
        for at, who, pack, units, fate in new_jobs:
            key, attribution = uuid.uuid4().hex, ATTRIBUTIONS[who]
            if fate == "record":
                ledger.record(key, units_milli=units, pack_type=pack, attribution=attribution, now=at)
                continue
            ledger.reserve(key, units_milli=units, pack_type=pack, attribution=attribution, now=at)
            later = at + timedelta(minutes=20)
            if fate == "submitted":
                ledger.mark_submitted(key, now=later)
            elif fate == "commit":
                ledger.commit(key, units_milli=units // 2, now=later)
            elif fate == "commit-more":
                ledger.commit(key, units_milli=units + 500, now=later)
            elif fate == "release":
                ledger.release(key, now=later)
        start, end = sorted(bounds)
        rows = ledger.usage(
            start=start,
            end=end,
            group_by=group_by,
            timezone=tz_name,
            week_start=week_start,
            filters={"project": project} if project else None,
        )
        got = {
            tuple(r.group.items()): (r.committed_milli, r.held_milli, r.committed_nano, r.held_nano, r.jobs)
            for r in rows
        }
        want = _expected(
            _fold_entries(ledger), to_micros(start), to_micros(end), group_by, tz_name, week_start, project
        )
        assert got == want

    try:
        check()
        assert ledger.verify().ok
    finally:
        ledger.close()
