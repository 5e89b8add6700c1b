"""Kling's cursor-paged list bodies, read strictly: ``POST /tasks`` and the two billing ledgers. Pure.

A list body is ``{"start_time", "end_time", "limit", "filters": [{"key", "values"}], "cursor"}``; the
answer is ``{"result", "count", "next_cursor", "has_more"}``, newest first. Filters with the same key match
any of their values, different keys must all match. A cursor stands for the whole query and the position
after the last item returned: when one is given, the other fields are ignored. A bad field is a
:class:`ListQueryError` naming it (Kling's 1201; 1200 for a body that is not an object). Every field is
bounded before it is used.

Both sides of the wire read bodies with this module: the simulator answers them from its records, the gateway
from its own ownership rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kling_budget.errors import InvalidInputError

__all__ = [
    "BALANCE",
    "PACKAGE",
    "TASKS",
    "Entry",
    "ListQueryError",
    "Listing",
    "Query",
    "encode_cursor",
    "page",
    "read_query",
]

_DAY_MS = 86_400_000
_MAX_TIME_MS = 10**14
_MAX_FILTERS = 10
_MAX_VALUES = 100
_MAX_VALUE_LEN = 255
_MAX_CURSOR = 4096
_MAX_SEQ_LEN = 64
_MAX_LIMIT = 500
_PRODUCT_TYPES = ("video", "image", "try_on")

Seq = int | str
"""What orders items created in the same millisecond (a sequence number or an id)."""

#: One listable item: ``(time, sequence, filter keys, item)``, yielded newest first.
Entry = tuple[int, Seq, Mapping[str, str], Any]


class ListQueryError(InvalidInputError):
    """A list body Kling refuses: ``code`` 1200 (not a JSON object) or 1201 (the message names the field)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _bad(field_name: str, problem: str) -> ListQueryError:
    return ListQueryError(1201, f"{field_name} {problem}")


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


TASKS = Listing(
    "tasks",
    {"status": ("submitted", "processing", "succeeded", "failed"), "product_type": _PRODUCT_TYPES},
    default_limit=100,
)
"""``POST /tasks``: the 2026 design's tasks by creation time (default window the last 30 days)."""
PACKAGE = Listing(
    "package",
    {"api_key_name": None, "product_type": _PRODUCT_TYPES, "package_name": None, "package_id": None},
    default_limit=500,
    window_required=True,
    exclusive=("package_name", "package_id"),
    aliases={"try-on": "try_on"},
)
"""``POST /account/billing/package``: resource-pack deductions by deduction time."""
BALANCE = Listing("balance", {"api_key_name": None}, default_limit=500, window_required=True)
"""``POST /account/billing/balance``: cash-balance deductions by deduction time."""


@dataclass(frozen=True, slots=True)
class Query:
    """A validated list query: window ``[start, end]`` (ms), page size, filters, and where the last page ended."""

    start: int
    end: int
    limit: int
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    after: tuple[int, Seq] | None = None

    def matches(self, keys: Mapping[str, str]) -> bool:
        """Whether an item with these filter keys passes every filter."""
        return all(keys.get(key) in values for key, values in self.filters)

    def values(self, key: str) -> tuple[str, ...] | None:
        """The values filter ``key`` accepts, ``None`` when the query does not filter on it."""
        return next((values for name, values in self.filters if name == key), None)


def read_query(listing: Listing, body: Any, now: int, *, seq: type[int] | type[str] = int) -> Query:
    """The query a list body asks for (or its ``cursor`` stands for); ``now`` in Unix ms; ``seq`` the type of
    the reader's sequences (a cursor carrying another kind is refused).

    Raises:
        ListQueryError: 1200 the body is not a JSON object; 1201 naming a bad field (``cursor`` when the
            cursor is not one this route handed out).
    """
    if not isinstance(body, dict):
        raise ListQueryError(1200, "the request body must be a JSON object")
    cursor = body.get("cursor")
    if cursor is not None and cursor != "":
        if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR:
            raise _bad("cursor", "must be a cursor returned as next_cursor")
        return _decode(listing, cursor, now, seq)
    return _query(listing, body, now, None)


def _query(listing: Listing, body: Mapping[str, Any], now: int, after: tuple[int, Seq] | None) -> Query:
    start = _time(body, "start_time", listing.window_required)
    end = _time(body, "end_time", listing.window_required)
    if end is None:
        end = now
    if start is None:
        start = end - 30 * _DAY_MS
    if start > end:
        raise _bad("start_time", "must not be after end_time")
    limit = body.get("limit", listing.default_limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise _bad("limit", f"must be an integer in [1, {_MAX_LIMIT}]")
    return Query(start, end, limit, _filters(listing, body.get("filters")), after)


def _time(body: Mapping[str, Any], name: str, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(name, "is required (Unix time in ms) unless a cursor is given")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME_MS:
        raise _bad(name, "must be a Unix time in ms (a non-negative integer)")
    return value


def _filters(listing: Listing, raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > _MAX_FILTERS:
        raise _bad("filters", f"must be a list of at most {_MAX_FILTERS} filters")
    merged: dict[str, list[str]] = {}
    keys = ", ".join(listing.filter_keys)
    for index, item in enumerate(raw):
        where = f"filters[{index}]"
        if not isinstance(item, dict):
            raise _bad(where, 'must be an object {"key": ..., "values": [...]}')
        key = item.get("key")
        if not isinstance(key, str) or key not in listing.filter_keys:
            shown = key[:40] if isinstance(key, str) else key
            raise _bad(f"{where}.key", f"must be one of {keys}; got {shown!r}")
        values = item.get("values")
        if not isinstance(values, list) or not 1 <= len(values) <= _MAX_VALUES:
            raise _bad(f"{where}.values", f"must be a list of 1 to {_MAX_VALUES} strings")
        accepted = listing.filter_keys[key]
        for value in values:
            if not isinstance(value, str) or not value or len(value) > _MAX_VALUE_LEN:
                raise _bad(f"{where}.values", f"must hold strings of 1 to {_MAX_VALUE_LEN} characters")
            value = listing.aliases.get(value, value)
            if accepted is not None and value not in accepted:
                raise _bad(f"{where}.values", f"must be among {', '.join(accepted)}; got {value[:40]!r}")
            merged.setdefault(key, []).append(value)
    if listing.exclusive is not None and all(k in merged for k in listing.exclusive):
        first, second = listing.exclusive
        raise _bad("filters", f"cannot combine {first} and {second}")
    return tuple((key, tuple(dict.fromkeys(values))) for key, values in merged.items())


def page(
    listing: Listing, query: Query, entries: Iterable[Entry], render: Callable[[Any], Any] = lambda item: item
) -> dict[str, Any]:
    """One page of ``entries`` (newest first) under ``query``: ``{result, count, next_cursor, has_more}``.

    ``render`` turns an entry's item into what the answer shows (only for the items on the page).
    """
    result: list[Any] = []
    last: tuple[int, Seq] | None = None
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
    cursor = encode_cursor(listing, query, last) if has_more and last is not None else ""
    return {"result": result, "count": len(result), "next_cursor": cursor, "has_more": has_more}


def encode_cursor(listing: Listing, query: Query, after: tuple[int, Seq]) -> str:
    """The opaque ``next_cursor`` continuing ``query`` after the item at ``after`` (time, sequence)."""
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


def _seq(value: Any, kind: type[int] | type[str]) -> bool:
    if kind is str:
        return isinstance(value, str) and 0 < len(value) <= _MAX_SEQ_LEN
    return isinstance(value, int) and not isinstance(value, bool)


def _decode(listing: Listing, cursor: str, now: int, seq: type[int] | type[str]) -> Query:
    invalid = _bad("cursor", "is not a cursor this route returned as next_cursor")
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise invalid from None
    if not isinstance(state, dict) or state.get("k") != listing.kind:
        raise invalid
    after = state.get("a")
    filters = state.get("f")
    if (
        not isinstance(after, list)
        or len(after) != 2
        or not isinstance(after[0], int)
        or isinstance(after[0], bool)
        or not _seq(after[1], seq)
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
    except ListQueryError:
        raise invalid from None
