"""The admin API's OpenAPI 3.0 document, written out by hand so it says exactly what the routes do.

``tests/test_admin_openapi.py`` checks that every route of :func:`kling_budget.server.admin.operations`
is documented and nothing else is; ``tests/test_schemathesis.py`` checks the answers against it.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from kling_budget.windows import REPORT_PERIOD_PATTERN

__all__ = ["openapi_document"]

Schema = dict[str, Any]

_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _amount(description: str = "", nullable: bool = False) -> Schema:
    schema: Schema = {"type": "string", "pattern": _DECIMAL}
    if description:
        schema["description"] = description
    if nullable:
        schema["nullable"] = True
    return schema


def _text(nullable: bool = False, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if nullable:
        schema["nullable"] = True
    return schema


def _obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


_INPUT_TEXT: Schema = {"type": "string", "maxLength": 200, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"}
_NAME: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$"}
_TIMEZONE: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9_+\-/]{1,64}$", "example": "Europe/Berlin"}
_STATES = ["held", "submitted", "committed", "released", "denied"]
_PACK_TYPES = ["video", "image", "try_on"]
_PERIODS = ["daily", "weekly", "monthly", "total"]
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_ALERT_KINDS = [
    "threshold",
    "exhausted",
    "denied",
    "overage",
    "over_budget_record",
    "forecast",
    "pack_low",
    "pack_expiring",
    "upstream_pack_exhausted",
    "reconcile_drift",
]

_SCOPE_FIELDS = _obj({k: _text() for k in ("project", "user", "api_key", "model", "tag")})

_AMOUNTS = {
    "committed_units": _amount(),
    "held_units": _amount(),
    "committed_usd": _amount(),
    "held_usd": _amount(),
    "jobs": {"type": "integer", "minimum": 0},
}
_UNITS_BY_PACK: Schema = {
    "type": "object",
    "description": "Units per pack type (video, image and try-on units are not added up).",
    "additionalProperties": _obj({"committed": _amount(), "held": _amount()}),
}
_USAGE_AMOUNTS = {
    **_AMOUNTS,
    "committed_units": _amount("Units, when they are all of one pack type; else null (see units_by_pack).", True),
    "held_units": _amount("Units, when they are all of one pack type; else null (see units_by_pack).", True),
    "units_by_pack": _UNITS_BY_PACK,
}

_SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": _text(
                        enum=[
                            "invalid_input",
                            "unauthorized",
                            "not_found",
                            "conflict",
                            "method_not_allowed",
                            "too_large",
                            "unsupported_media_type",
                            "ledger_unavailable",
                            "not_available",
                            "upstream_error",
                            "internal_error",
                        ]
                    ),
                    "message": _text(),
                }
            )
        }
    ),
    "Status": _obj({"now": _text(format="date-time"), "price_version": _text()}),
    "Forecast": {
        "type": "object",
        "nullable": True,
        "description": "Projected spend at the window's end and projected exhaustion (null until a forecast "
        "is available).",
        "additionalProperties": True,
    },
    "Budget": _obj(
        {
            "name": _NAME,
            "period": _text(enum=_PERIODS),
            "timezone": _text(),
            "hard": {"type": "boolean"},
            "unit_pack": _text(enum=_PACK_TYPES),
            "thresholds": {"type": "array", "items": {"type": "integer"}},
            "limit_units": _amount(nullable=True),
            "limit_usd": _amount(nullable=True),
            "committed_units": _amount("Settled spend in the current window, including overage."),
            "held_units": _amount("Held by running jobs in the current window."),
            "overage_units": _amount(),
            "remaining_units": _amount("Limit minus committed minus held, never negative.", nullable=True),
            "committed_usd": _amount(),
            "held_usd": _amount(),
            "overage_usd": _amount(),
            "remaining_usd": _amount(nullable=True),
            "percent": _amount("Highest share of a limit used (committed + held), in percent."),
            "window_start": _text(format="date-time"),
            "window_end": _text(nullable=True, format="date-time"),
            "resets_at": _text(nullable=True, format="date-time"),
            "as_of": _text(format="date-time"),
            "scope": _text(description="Human form, e.g. 'project=marketing' or 'whole account'."),
            "scope_fields": _SCOPE_FIELDS,
            "week_start": _text(enum=_WEEKDAYS),
            "exhausted": {"type": "boolean"},
            "forecast": _ref("Forecast"),
        }
    ),
    "BudgetList": _obj({"budgets": {"type": "array", "items": _ref("Budget")}}),
    "BudgetInput": {
        "type": "object",
        "additionalProperties": False,
        "description": "A budget: at least one of limit_units and limit_usd. Amounts are exact: a string like "
        '"1.50" or a whole number, never a JSON number with a fraction.',
        "properties": {
            "period": _text(enum=_PERIODS, default="monthly"),
            "limit_units": {
                "oneOf": [
                    {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,3})?$"},
                    {"type": "integer", "minimum": 1, "maximum": 999_999_999_999},
                ]
            },
            "limit_usd": {
                "oneOf": [
                    {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,9})?$"},
                    {"type": "integer", "minimum": 1, "maximum": 999_999_999},
                ]
            },
            "project": _INPUT_TEXT,
            "user": _INPUT_TEXT,
            "api_key": _INPUT_TEXT,
            "model": _INPUT_TEXT,
            "tag": _INPUT_TEXT,
            "hard": {"type": "boolean", "default": True},
            "alert_at": {
                "type": "array",
                "maxItems": 10,
                "items": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            "timezone": _TIMEZONE,
            "week_start": {
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 6},
                    {"type": "string", "maxLength": 20, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"},
                ]
            },
            "unit_pack": _text(enum=_PACK_TYPES, default="video"),
        },
    },
    "Deleted": _obj({"deleted": _text()}),
    "VirtualKey": _obj(
        {
            "id": {"type": "integer"},
            "name": _text(),
            "kind": _text(enum=["jwt", "api", "both"]),
            "project": _text(),
            "user": _text(),
            "tags": {"type": "array", "items": _text()},
            "access_key": _text(nullable=True, description="The public access key (the JWT iss)."),
            "api_key_prefix": _text(nullable=True, description="The first characters of the API key."),
            "has_webhook_secret": {"type": "boolean"},
            "created_at": _text(format="date-time"),
            "rotated_at": _text(nullable=True, format="date-time"),
            "revoked_at": _text(nullable=True, format="date-time"),
            "revoked": {"type": "boolean"},
        }
    ),
    "IssuedKey": {
        "allOf": [
            _ref("VirtualKey"),
            _obj(
                {
                    "secret_key": _text(nullable=True, description="Shown once: sign JWTs with it (jwt, both)."),
                    "api_key": _text(nullable=True, description="Shown once: send as Bearer (api, both)."),
                    "webhook_secret": _text(nullable=True, description="Shown once: verifies forwarded callbacks."),
                }
            ),
        ],
        "description": "A key with its secrets. They are in this answer only: the gateway cannot show them again.",
    },
    "KeyList": _obj({"keys": {"type": "array", "items": _ref("VirtualKey")}}),
    "KeyInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "project"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$"},
            "project": {**_INPUT_TEXT, "minLength": 1},
            "user": _INPUT_TEXT,
            "tags": {"type": "array", "maxItems": 20, "items": _INPUT_TEXT},
            "kind": _text(enum=["jwt", "api", "both"], default="jwt"),
        },
    },
    "Job": _obj(
        {
            "task_id": _text(
                nullable=True, description="Kling's task id: what the client holds (null until Kling answered)."
            ),
            "id": _text(description="The reservation id (the ledger's idempotency key)."),
            "external_task_id": _text(nullable=True, description="A gateway client's own external_task_id."),
            "kind": _text(enum=["reserve", "record"]),
            "state": _text(enum=_STATES),
            "open": {"type": "boolean", "description": "Still holding budget (held or submitted)."},
            "project": _text(),
            "user": _text(),
            "api_key": _text(),
            "model": _text(),
            "tags": {"type": "array", "items": _text()},
            "product": _text(),
            "pack_type": _text(enum=_PACK_TYPES),
            "held_units": _amount("The price reserved."),
            "held_usd": _amount(),
            "actual_units": _amount("What Kling charged, once committed.", nullable=True),
            "actual_usd": _amount(nullable=True),
            "cost_units": _amount("Committed: what it cost; open: what it holds; released or denied: 0."),
            "cost_usd": _amount(),
            "overage_units": _amount(),
            "overage_usd": _amount(),
            "over_budget": {"type": "boolean"},
            "reserved_at": _text(format="date-time"),
            "resolved_at": _text(nullable=True, format="date-time"),
            "expires_at": _text(nullable=True, format="date-time"),
            "params": {
                "type": "object",
                "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]},
            },
            "release_reason": _text(nullable=True),
        }
    ),
    "JobList": _obj({"reservations": {"type": "array", "items": _ref("Job")}}),
    "Holds": _obj(
        {
            "holds": {"type": "array", "items": _ref("Job")},
            "count": {"type": "integer", "minimum": 0},
            "truncated": {"type": "boolean"},
            "held_units": _amount(),
            "held_usd": _amount(),
        }
    ),
    "Alert": _obj(
        {
            "id": {"type": "integer", "nullable": True},
            "kind": _text(enum=_ALERT_KINDS),
            "message": _text(),
            "budget": _text(),
            "scope": _text(),
            "period": _text(),
            "window_start": _text(),
            "window_end": _text(),
            "limit_kind": _text(),
            "limit": _text(),
            "used": _text(),
            "held": _text(),
            "percent": _text(),
            "threshold": {"type": "integer", "nullable": True},
            "reservation_id": _text(),
            "created_at": _text(),
            "dedupe_key": _text(),
        }
    ),
    "AlertList": _obj({"alerts": {"type": "array", "items": _ref("Alert")}}),
    "UsageRow": _obj(
        {
            "group": {"type": "object", "additionalProperties": _text()},
            **_USAGE_AMOUNTS,
        }
    ),
    "Usage": _obj(
        {
            "start": _text(format="date-time"),
            "end": _text(format="date-time"),
            "period": _text(),
            "timezone": _text(),
            "group_by": {"type": "array", "items": _text()},
            "filters": {"type": "object", "additionalProperties": _text()},
            "rows": {"type": "array", "items": _ref("UsageRow")},
            "totals": _obj(_USAGE_AMOUNTS),
        }
    ),
    "SeriesPoint": _obj(
        {
            "label": _text(description="Local hour (2026-03-10T14:00) or day (2026-03-10)."),
            "start": _text(format="date-time"),
            "committed_usd": _amount(),
            "held_usd": _amount(),
            "committed_units": _amount("Null when the series holds more than one pack type.", True),
            "held_units": _amount("Null when the series holds more than one pack type.", True),
            "units_by_pack": _UNITS_BY_PACK,
            "jobs": {"type": "integer", "minimum": 0},
            "cumulative_committed_usd": _amount(),
            "cumulative_held_usd": _amount(),
            "cumulative_usd": _amount(),
            "cumulative_committed_units": _amount(nullable=True),
            "cumulative_held_units": _amount(nullable=True),
            "cumulative_units": _amount(nullable=True),
        }
    ),
    "BudgetLine": _obj(
        {
            "budget": _text(),
            "period": _text(enum=_PERIODS),
            "limit_usd": _amount(nullable=True),
            "limit_units": _amount(nullable=True),
            "unit_pack": _text(enum=_PACK_TYPES),
            "resets_at": _text(nullable=True, format="date-time"),
        }
    ),
    "Series": _obj(
        {
            "start": _text(format="date-time"),
            "end": _text(format="date-time"),
            "now": _text(format="date-time"),
            "period": _text(),
            "timezone": _text(),
            "bucket": _text(enum=["hour", "day"]),
            "filters": {"type": "object", "additionalProperties": _text()},
            "points": {"type": "array", "items": _ref("SeriesPoint")},
            "budget_lines": {
                "type": "array",
                "items": _ref("BudgetLine"),
                "description": "Budgets of exactly the filtered scope whose period is the chart's (today: daily, week: "
                "weekly, month: monthly; a budget in another time zone is shifted by the offset).",
            },
            "totals": _obj(_USAGE_AMOUNTS),
        }
    ),
    "Product": _obj(
        {
            "name": _text(),
            "pack_type": _text(enum=_PACK_TYPES),
            "description": _text(),
            "default_mode": _text(nullable=True),
            "default_duration": {"type": "integer", "nullable": True},
            "default_resolution": _text(nullable=True),
            "models": {"type": "array", "items": _text()},
        }
    ),
    "Prices": _obj(
        {
            "version": _text(),
            "overlay": _text(nullable=True, description="The price overlay on top of the table, if any."),
            "currency": _text(),
            "list_usd_per_unit": {"type": "object", "additionalProperties": _amount()},
            "products": {"type": "array", "items": _ref("Product")},
        }
    ),
    "PriceRow": _obj(
        {
            "model": _text(),
            "label": _text(),
            "mode": _text(),
            "resolution": _text(),
            "sound": _text(),
            "voice_control": {"type": "boolean"},
            "video_input": {"type": "boolean"},
            "image_input": {"type": "boolean"},
            "per": _text(),
            "units": _amount(),
            "durations": {"type": "array", "items": {"type": "integer"}},
            "min_duration": {"type": "integer", "nullable": True},
            "max_duration": {"type": "integer", "nullable": True},
            "block_seconds": {"type": "integer", "nullable": True},
            "max_n": {"type": "integer"},
            "note": _text(),
            "source": _text(),
            "effective": _text(),
        }
    ),
    "ProductPrices": {
        "allOf": [_ref("Product"), _obj({"rows": {"type": "array", "items": _ref("PriceRow")}})],
    },
    "QuoteInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "model": _INPUT_TEXT,
            "product": {**_INPUT_TEXT, "default": "video"},
            "mode": _INPUT_TEXT,
            "duration": {
                "oneOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "maxLength": 12, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$"},
                ]
            },
            "resolution": _INPUT_TEXT,
            "sound": {"oneOf": [{"type": "boolean"}, {"type": "string", "maxLength": 20}]},
            "voice_control": {"type": "boolean"},
            "video_input": {"type": "boolean"},
            "image_input": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 1, "maximum": 100},
            "project": _INPUT_TEXT,
            "user": _INPUT_TEXT,
            "api_key": _INPUT_TEXT,
            "tags": {"type": "array", "maxItems": 20, "items": _INPUT_TEXT},
        },
    },
    "ReconcileInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "check_costs": {"type": "boolean", "default": True, "description": "Also compare with /account/costs."},
            "held_grace_seconds": {"type": "integer", "minimum": 0, "maximum": 604800, "default": 900},
            "release_missing_older_than_seconds": {
                "type": "integer",
                "minimum": 3600,
                "maximum": 31536000,
                "description": "Release submitted jobs Kling has no task for once this old (default: never).",
            },
        },
    },
    "ReconcileReport": _obj(
        {
            "ok": {"type": "boolean"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "items": {"type": "array", "items": {"type": "object"}},
            "costs_checked": {"type": "boolean"},
            "costs_error": _text(nullable=True),
            "costs_note": _text(),
            "drift": {"type": "array", "items": {"type": "object"}},
            "unresolved": {"type": "integer"},
            "drifting": {"type": "array", "items": _text()},
        }
    ),
    "BudgetVerdict": _obj(
        {
            "budget": _text(),
            "hard": {"type": "boolean"},
            "allowed": {"type": "boolean"},
            "reason": _text(),
            "remaining_units_after": _amount(nullable=True),
            "remaining_usd_after": _amount(nullable=True),
            "resets_at": _text(nullable=True, format="date-time"),
        }
    ),
    "Quote": _obj(
        {
            "model": _text(),
            "product": _text(),
            "pack_type": _text(enum=_PACK_TYPES),
            "units": _amount(),
            "usd": _amount("At the list price of the pack type."),
            "price_version": _text(),
            "price_overlay": _text(nullable=True, description="The price overlay that priced it, else null."),
            "description": _text(),
            "params": {
                "type": "object",
                "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]},
            },
            "breakdown": {"type": "array", "items": _obj({"label": _text(), "units": _amount()})},
            "allowed": {"type": "boolean", "description": "No hard budget would deny the request right now."},
            "budgets": {"type": "array", "items": _ref("BudgetVerdict")},
        }
    ),
}

_SCHEMAS["NewBudget"] = {
    **_SCHEMAS["BudgetInput"],
    "required": ["name"],
    "properties": {"name": _NAME, **_SCHEMAS["BudgetInput"]["properties"]},
    "description": "A new budget: its name and the fields of BudgetInput.",
}

_ERRORS = {
    400: "Invalid input; the message says what is accepted.",
    401: "Missing or wrong admin token.",
    404: "No such resource.",
    409: "Conflicts with the current state.",
    413: "Request body too large.",
    415: "The body is not application/json.",
    503: "The ledger cannot be reached.",
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(success: dict[int, tuple[str, str]], errors: tuple[int, ...]) -> Schema:
    result: Schema = {str(code): _json(_ref(schema), text) for code, (schema, text) in success.items()}
    for code in (400, 401, 503, *errors):
        result[str(code)] = _json(_ref("Error"), _ERRORS[code])
    return result


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


_QUERY_TEXT: Schema = {**_INPUT_TEXT, "minLength": 1}
_FILTERS = [
    _query(name, _QUERY_TEXT, f"Only jobs with this {name.replace('_', ' ')}.")
    for name in ("project", "user", "api_key", "model", "tag")
]
_PACK_FILTER = _query("pack_type", {"type": "string", "enum": _PACK_TYPES}, "Only this pack type.")
_RANGE = [
    _query(
        "period",
        {"type": "string", "pattern": REPORT_PERIOD_PATTERN, "default": "month"},
        "Current day, week or month in the time zone, or the last N days up to now. Not with from/to.",
    ),
    _query(
        "from",
        {"type": "string", "minLength": 1, "maxLength": 40},
        "Start, ISO 8601 date or date-time (local if no offset).",
    ),
    _query("to", {"type": "string", "minLength": 1, "maxLength": 40}, "End (exclusive); default now. Needs from."),
    _query("timezone", _TIMEZONE, "IANA zone in which days, weeks and months are cut; default UTC."),
]
_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "At most this many items.")


def _operation(summary: str, responses: Schema, *, parameters: list[Schema] | None = None, **extra: Any) -> Schema:
    result: Schema = {"summary": summary, "responses": responses}
    if parameters:
        result["parameters"] = parameters
    result.update(extra)
    return result


def _body(schema: str) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _paths() -> dict[str, Schema]:
    budget_name = _path("name", {"type": "string", "maxLength": 100})
    budget_filters = [_FILTERS[0], _FILTERS[1], _FILTERS[3]]
    return {
        "/openapi.json": {
            "get": _operation(
                "This document",
                {"200": {"description": "The OpenAPI document.", "content": {"application/json": {}}}},
                security=[],
            )
        },
        "/status": {
            "get": _operation("The gateway's clock and price table version", _responses({200: ("Status", "OK")}, ()))
        },
        "/budgets": {
            "get": _operation(
                "Budgets with their status in the current window and their forecast",
                _responses({200: ("BudgetList", "Budgets, by name.")}, ()),
                parameters=budget_filters,
                description="With filters, only the budgets that jobs of that project/user/model count against "
                "(their scope field is empty or equal).",
            ),
            "post": _operation(
                "Create a budget",
                _responses({201: ("Budget", "Created.")}, (409, 413, 415)),
                requestBody=_body("NewBudget"),
            ),
        },
        "/budgets/{name}": {
            "parameters": [budget_name],
            "get": _operation("One budget with its status", _responses({200: ("Budget", "The budget.")}, (404,))),
            "put": _operation(
                "Create or replace a budget",
                _responses({200: ("Budget", "Replaced."), 201: ("Budget", "Created.")}, (413, 415)),
                requestBody=_body("BudgetInput"),
                description="Changing only limits, thresholds or hard/soft keeps the window's counters.",
            ),
            "delete": _operation(
                "Delete a budget (its spend history stays in the ledger)",
                _responses({200: ("Deleted", "Deleted.")}, (404,)),
            ),
        },
        "/keys": {
            "get": _operation(
                "Virtual keys, by name (never their secrets)",
                _responses({200: ("KeyList", "Keys.")}, ()),
                parameters=[
                    _query("include_revoked", {"type": "boolean", "default": True}, "Also list revoked keys."),
                    _query("project", _QUERY_TEXT, "Only this project's keys."),
                ],
            ),
            "post": _operation(
                "Issue a virtual key; its secrets are in this answer only",
                _responses({201: ("IssuedKey", "Created.")}, (409, 413, 415)),
                requestBody=_body("KeyInput"),
            ),
        },
        "/keys/{name}": {
            "parameters": [_path("name", {"type": "string", "maxLength": 100})],
            "get": _operation("One virtual key (no secrets)", _responses({200: ("VirtualKey", "The key.")}, (404,))),
        },
        "/keys/{name}/revoke": {
            "parameters": [_path("name", {"type": "string", "maxLength": 100})],
            "post": _operation(
                "Revoke a key: its credentials are refused from now on (idempotent)",
                _responses({200: ("VirtualKey", "The revoked key.")}, (404,)),
            ),
        },
        "/keys/{name}/rotate": {
            "parameters": [_path("name", {"type": "string", "maxLength": 100})],
            "post": _operation(
                "Replace a key's credentials; the new secrets are in this answer only",
                _responses({200: ("IssuedKey", "The key with its new secrets.")}, (404, 409)),
            ),
        },
        "/usage": {
            "get": _operation(
                "Committed and held spend, grouped",
                _responses({200: ("Usage", "Usage rows and totals.")}, ()),
                parameters=[
                    _query(
                        "group_by",
                        {"type": "string", "minLength": 1, "maxLength": 200, "default": "project"},
                        "Comma-separated, 1 to 4 of: project, user, api_key, model, pack_type, tag, hour, day, "
                        "week, month.",
                    ),
                    *_RANGE,
                    _query("week_start", {"type": "integer", "minimum": 0, "maximum": 6}, "0 = Monday."),
                    *_FILTERS,
                    _PACK_FILTER,
                ],
            )
        },
        "/usage/series": {
            "get": _operation(
                "Spend over time (per hour or day, and cumulative) against the matching budget lines",
                _responses({200: ("Series", "Points and budget lines.")}, ()),
                parameters=[
                    *_RANGE,
                    _query(
                        "bucket",
                        {"type": "string", "enum": ["hour", "day"]},
                        "Default: hour for periods up to two days, else day.",
                    ),
                    *_FILTERS,
                    _PACK_FILTER,
                ],
            )
        },
        "/reservations": {
            "get": _operation(
                "Recent jobs (reservations and recorded usage), newest first",
                _responses({200: ("JobList", "Jobs.")}, ()),
                parameters=[
                    _query(
                        "state",
                        {"type": "string", "minLength": 1, "maxLength": 200},
                        "open, or a comma-separated list of: held, submitted, committed, released, denied.",
                    ),
                    _query(
                        "task_id",
                        {"type": "string", "minLength": 1, "maxLength": 200},
                        "The job of this Kling task id (not combined with state or the attribute filters).",
                    ),
                    _LIMIT,
                    *_FILTERS,
                ],
            )
        },
        "/reservations/{reservation_id}": {
            "parameters": [_path("reservation_id")],
            "get": _operation(
                "One job, by reservation id or by the Kling task id its client holds",
                _responses({200: ("Job", "The job.")}, (404,)),
            ),
        },
        "/holds": {
            "get": _operation(
                "Open holds (held or submitted), newest first, with their total",
                _responses({200: ("Holds", "Open holds.")}, ()),
                parameters=[_LIMIT, *_FILTERS],
            )
        },
        "/alerts": {
            "get": _operation(
                "Recent alerts, newest first, or the pending ones (not yet delivered), oldest first",
                _responses({200: ("AlertList", "Alerts.")}, ()),
                parameters=[_LIMIT, _query("pending", {"type": "boolean"}, "Only undelivered alerts.")],
            )
        },
        "/prices": {
            "get": _operation(
                "The price table: products, models and list prices per unit",
                _responses({200: ("Prices", "The price table.")}, ()),
            )
        },
        "/prices/{product}": {
            "parameters": [_path("product")],
            "get": _operation(
                "Every priced variant of one product", _responses({200: ("ProductPrices", "Rows.")}, (404,))
            ),
        },
        "/quote": {
            "post": _operation(
                "Price a request exactly and say which budgets would deny it now (reserves nothing)",
                _responses({200: ("Quote", "The quote and each matching budget's verdict.")}, (413, 415)),
                requestBody=_body("QuoteInput"),
            )
        },
        "/reconcile": {
            "post": _operation(
                "Settle open jobs from Kling's own answers, then compare spend with Kling's pack balances",
                _responses({200: ("ReconcileReport", "What the run did and found.")}, (409, 413, 415)),
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("ReconcileInput")}},
                },
                description="One run at a time (409 while another runs). Jobs still running at Kling stay open.",
            )
        },
    }


@lru_cache(maxsize=1)
def _document() -> Schema:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "kling-budget admin API",
            "version": "1",
            "description": "Budgets, virtual keys, usage, holds, alerts, prices and reconcile of a kling-budget "
            "gateway. Every amount is an exact decimal string. Errors are "
            '{"error": {"code", "message"}}.',
        },
        "servers": [{"url": "/admin/api"}],
        "security": [{"adminToken": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The gateway's admin token (KLING_BUDGET_ADMIN_TOKEN).",
                }
            },
            "schemas": _SCHEMAS,
        },
    }


def openapi_document() -> Schema:
    """The OpenAPI 3 document of the admin API (a fresh copy)."""
    return copy.deepcopy(_document())
