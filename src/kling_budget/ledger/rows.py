"""Ledger rows and SQL fragments: column lists, row ↔ value mapping, keys and request hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kling_budget.budgets import Budget, Scope
from kling_budget.errors import (
    InvalidInputError,
)
from kling_budget.ledger.backend import Row
from kling_budget.ledger.records import ReservationInfo, ReservationState
from kling_budget.types import Attribution, Denial, PackType
from kling_budget.windows import Period, from_micros

__all__ = [
    "BUCKET_MICROS",
    "BUDGET_COLUMNS",
    "COUNTER_COLUMNS",
    "MAX_KEY_LENGTH",
    "RESERVATION_COLUMNS",
    "budget_from_row",
    "denial_from_dict",
    "hash_request",
    "info_from_row",
    "scope_filter",
    "tags_column",
    "validate_amount",
    "validate_key",
]

BUCKET_MICROS = 15 * 60 * 1_000_000  # usage roll-up granularity: exact for every UTC offset in use

RESERVATION_COLUMNS = (
    "id, kind, state, project, user_id, api_key, model, tags, product, pack_type, units_milli, usd_nano, "
    "actual_milli, actual_nano, overage_milli, overage_nano, over_budget, reserved_at, resolved_at, "
    "expires_at, task_id, detail, request_hash"
)

BUDGET_COLUMNS = (
    "id, name, scope_project, scope_user, scope_api_key, scope_model, scope_tag, period, timezone, "
    "week_start, unit_pack, limit_milli, limit_nano, hard, thresholds"
)

COUNTER_COLUMNS = "committed_milli, held_milli, overage_milli, committed_nano, held_nano, overage_nano"

MAX_KEY_LENGTH = 255


def tags_column(tags: Iterable[str]) -> str:
    """Tags as stored: ``,a,b,`` (sorted), or empty."""
    items = sorted({t for t in tags if t})
    return f",{','.join(items)}," if items else ""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def scope_filter(scope: Scope, table: str = "") -> tuple[str, list[Any]]:
    """SQL conditions (joined by AND, possibly empty) selecting the reservations in ``scope``."""
    prefix = f"{table}." if table else ""
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("project", scope.project),
        ("user_id", scope.user),
        ("api_key", scope.api_key),
        ("model", scope.model),
    ):
        if value:
            conditions.append(f"{prefix}{column} = ?")
            params.append(value)
    if scope.tag:
        conditions.append(f"{prefix}tags LIKE ? ESCAPE '\\'")
        params.append(f"%,{_like_escape(scope.tag)},%")
    return " AND ".join(conditions), params


def budget_from_row(row: Row) -> Budget:
    """Rebuild a :class:`Budget` from a ``budgets`` row (``BUDGET_COLUMNS`` order)."""
    return Budget(
        id=int(row[0]),
        name=row[1],
        scope=Scope(project=row[2], user=row[3], api_key=row[4], model=row[5], tag=row[6]),
        period=Period(row[7]),
        timezone=row[8],
        week_start=int(row[9]),
        unit_pack=PackType(row[10]),
        limit_units_milli=row[11],
        limit_usd_nano=row[12],
        hard=bool(row[13]),
        thresholds=tuple(int(t) for t in json.loads(row[14])),
    )


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(f"a reservation key must be a non-empty string of at most {MAX_KEY_LENGTH} chars")
    return key


def validate_amount(units_milli: int, what: str = "units") -> int:
    if isinstance(units_milli, bool) or not isinstance(units_milli, int) or units_milli < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer number of milli-units")
    return units_milli


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # what json.dumps(..., separators=(",", ":")) builds per call


def hash_request(kind: str, units_milli: int, pack: PackType, attribution: Attribution, product: str) -> str:
    text = _COMPACT_JSON.encode(
        [
            kind,
            units_milli,
            pack.value,
            attribution.project,
            attribution.user,
            attribution.api_key,
            attribution.model,
            list(attribution.tags),
            product,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_STATES = {state.value: state for state in ReservationState}
_PACK_TYPES = {pack.value: pack for pack in PackType}


def info_from_row(row: Row) -> ReservationInfo:
    detail = json.loads(row[21]) if row[21] and row[21] != "{}" else {}
    tags = tuple(t for t in row[7].split(",") if t) if row[7] else ()
    return ReservationInfo(
        id=row[0],
        kind=row[1],
        state=_STATES[row[2]],
        attribution=Attribution(project=row[3], user=row[4], api_key=row[5], model=row[6], tags=tags),
        product=row[8],
        pack_type=_PACK_TYPES[row[9]],
        units_milli=row[10],
        usd_nano=row[11],
        actual_milli=row[12],
        actual_nano=row[13],
        overage_milli=row[14],
        overage_nano=row[15],
        over_budget=bool(row[16]),
        reserved_at=from_micros(row[17]),
        resolved_at=None if row[18] is None else from_micros(row[18]),
        expires_at=None if row[19] is None else from_micros(row[19]),
        task_id=row[20],
        detail=detail,
        request_hash=row[22],
    )


def denial_from_dict(data: Mapping[str, Any]) -> Denial:
    from kling_budget.money import units_to_milli, usd_to_nano

    convert = units_to_milli if data["limit_kind"] == "units" else usd_to_nano
    return Denial(
        budget=data["budget"],
        scope=data["scope"],
        period=data["period"],
        window_start=datetime.fromisoformat(data["window_start"]),
        window_end=datetime.fromisoformat(data["window_end"]) if data["window_end"] else None,
        limit_kind=data["limit_kind"],
        limit=convert(data["limit"]),
        committed=convert(data["committed"]),
        held=convert(data["held"]),
        price=convert(data["price"]),
        reset_at=datetime.fromisoformat(data["reset_at"]) if data["reset_at"] else None,
    )
