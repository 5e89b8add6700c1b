"""Cursor paging of the 2026 list routes: ``POST /tasks`` and the two billing ledgers.

A list body is ``{"start_time", "end_time", "limit", "filters": [{"key", "values"}], "cursor"}``; the
answer is ``{"result", "count", "next_cursor", "has_more"}``, newest first. Filters with the same key match
any of their values, different keys must all match. A cursor stands for the whole query and the position
after the last item returned: when one is given, the other fields are ignored. Bad fields are 1201 naming
the field. Pure: no state, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kling_budget.simulator.fields import bad
from kling_budget.simulator.protocol import SimError

__all__ = ["Entry", "Listing", "Query", "page", "read_query"]

_DAY_MS = 86_400_000
_MAX_TIME_MS = 10**14
_MAX_FILTERS = 10
_MAX_VALUES = 100
_MAX_VALUE_LEN = 255
_MAX_CURSOR = 4096
_MAX_LIMIT = 500

#: One listable item: ``(time, sequence, filter keys, item)``, yielded newest first.
Entry = tuple[int, int, Mapping[str, str], Any]


@dataclass(frozen=True, slots=True)
class Listing:
    """How one list route reads its body.

    Attributes:
        kind: the route's name; a cursor of one route is refused by another.
        filter_keys: accepted filter keys, with their accepted values (``None``: any text).
        default_limit: ``limit`` when the body leaves it out.
        window_required: ``start_time`` and ``end_time`` must be given (unless a cursor is); otherwise they
            default to the last 30 days.
        exclusive: two filter keys that cannot be combined.
        aliases: other spellings of filter values (``{"try-on": "try_on"}``).
    """

    kind: str
    filter_keys: Mapping[str, tuple[str, ...] | None]
    default_limit: int
    window_required: bool = False
    exclusive: tuple[str, str] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Query:
    """A validated list query: window ``[start, end]`` (ms), page size, filters, and where the last page ended."""

    start: int
    end: int
    limit: int
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    after: tuple[int, int] | None = None

    def matches(self, keys: Mapping[str, str]) -> bool:
        """Whether an item with these filter keys passes every filter."""
        return all(keys.get(key) in values for key, values in self.filters)


def read_query(listing: Listing, body: Any, now: int) -> Query:
    """The query a list body asks for (or its ``cursor`` stands for).

    Raises:
        SimError: 1200 the body is not a JSON object; 1201 naming a bad field (``cursor`` when the cursor is
            not one this route handed out).
    """
    if not isinstance(body, dict):
        raise SimError(1200, "the request body must be a JSON object")
    cursor = body.get("cursor")
    if cursor is not None and cursor != "":
        if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR:
            raise bad("cursor", "must be a cursor returned as next_cursor")
        return _decode(listing, cursor, now)
    return _query(listing, body, now, None)


def _query(listing: Listing, body: Mapping[str, Any], now: int, after: tuple[int, int] | None) -> Query:
    start = _time(body, "start_time", listing.window_required)
    end = _time(body, "end_time", listing.window_required)
    if end is None:
        end = now
    if start is None:
        start = end - 30 * _DAY_MS
    if start > end:
        raise bad("start_time", "must not be after end_time")
    limit = body.get("limit", listing.default_limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise bad("limit", f"must be an integer in [1, {_MAX_LIMIT}]")
    return Query(start, end, limit, _filters(listing, body.get("filters")), after)


def _time(body: Mapping[str, Any], name: str, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad(name, "is required (Unix time in ms) unless a cursor is given")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME_MS:
        raise bad(name, "must be a Unix time in ms (a non-negative integer)")
    return value


def _filters(listing: Listing, raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > _MAX_FILTERS:
        raise bad("filters", f"must be a list of at most {_MAX_FILTERS} filters")
    merged: dict[str, list[str]] = {}
    keys = ", ".join(listing.filter_keys)
    for index, item in enumerate(raw):
        where = f"filters[{index}]"
        if not isinstance(item, dict):
            raise bad(where, 'must be an object {"key": ..., "values": [...]}')
        key = item.get("key")
        if not isinstance(key, str) or key not in listing.filter_keys:
            raise bad(f"{where}.key", f"must be one of {keys}; got {key!r}")
        values = item.get("values")
        if not isinstance(values, list) or not 1 <= len(values) <= _MAX_VALUES:
            raise bad(f"{where}.values", f"must be a list of 1 to {_MAX_VALUES} strings")
        accepted = listing.filter_keys[key]
        for value in values:
            if not isinstance(value, str) or not value or len(value) > _MAX_VALUE_LEN:
                raise bad(f"{where}.values", f"must hold strings of 1 to {_MAX_VALUE_LEN} characters")
            value = listing.aliases.get(value, value)
            if accepted is not None and value not in accepted:
                raise bad(f"{where}.values", f"must be among {', '.join(accepted)}; got {value!r}")
            merged.setdefault(key, []).append(value)
    if listing.exclusive is not None and all(k in merged for k in listing.exclusive):
        first, second = listing.exclusive
        raise bad("filters", f"cannot combine {first} and {second}")
    return tuple((key, tuple(dict.fromkeys(values))) for key, values in merged.items())


def page(
    listing: Listing, query: Query, entries: Iterable[Entry], render: Callable[[Any], Any] = lambda item: item
) -> dict[str, Any]:
    """One page of ``entries`` (newest first) under ``query``: ``{result, count, next_cursor, has_more}``.

    ``render`` turns an entry's item into what the answer shows (only for the items on the page).
    """
    result: list[Any] = []
    last: tuple[int, int] | None = None
    has_more = False
    for time, seq, keys, item in entries:
        if query.after is not None and (time, seq) >= query.after:
            continue
        if time > query.end:
            continue
        if time < query.start:
            break
        if not query.matches(keys):
            continue
        if len(result) == query.limit:
            has_more = True
            break
        result.append(render(item))
        last = (time, seq)
    cursor = _encode(listing, query, last) if has_more and last is not None else ""
    return {"result": result, "count": len(result), "next_cursor": cursor, "has_more": has_more}


def _encode(listing: Listing, query: Query, after: tuple[int, int]) -> str:
    state = {
        "k": listing.kind,
        "s": query.start,
        "e": query.end,
        "l": query.limit,
        "f": [[key, list(values)] for key, values in query.filters],
        "a": list(after),
    }
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(listing: Listing, cursor: str, now: int) -> Query:
    invalid = bad("cursor", "is not a cursor this route returned as next_cursor")
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(state, dict) or state.get("k") != listing.kind:
        raise invalid
    after = state.get("a")
    filters = state.get("f")
    if (
        not isinstance(after, list)
        or len(after) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in after)
        or not isinstance(filters, list)
        or not all(isinstance(f, list) and len(f) == 2 for f in filters)
    ):
        raise invalid
    body = {
        "start_time": state.get("s"),
        "end_time": state.get("e"),
        "limit": state.get("l"),
        "filters": [{"key": key, "values": values} for key, values in filters] or None,
    }
    try:
        return _query(listing, body, now, (after[0], after[1]))
    except SimError:
        raise invalid from None
