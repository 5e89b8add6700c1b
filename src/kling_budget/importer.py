"""Import the "Kling AI cost controls" recipe's ``cost_tracking.json`` into the ledger.

The recipe keeps one JSON object with its budgets and a list of usage records. Field names vary between
copies of the recipe, so the common spellings are accepted:

* usage list under ``usage``, ``records``, ``usage_records`` or ``history`` (or the file is the list);
  each record has ``job_id`` (or ``id``/``task_id``), ``project_id`` (or ``project``), ``model``,
  ``duration``, optional ``mode``, ``user_id``, ``credits``/``credits_used``/``units`` and a
  ``timestamp`` (ISO 8601 or Unix seconds);
* budgets under ``budgets``: an object keyed by project id, or a list with ``project_id``; limits as
  ``limit_credits``/``credit_limit``/``limit``/``credits``/``monthly_limit``/``daily_limit``/``weekly_limit``
  and ``limit_usd``/``budget_usd``; ``period`` daily/weekly/monthly; ``alert_threshold`` (0.8 or 80).

Each record is recorded at its original time with its job id as the idempotency key, so importing the same
file twice adds nothing. A record without a job id gets a key derived from its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kling_budget.errors import ConfigurationError, InvalidInputError, KlingBudgetError
from kling_budget.money import units_to_milli
from kling_budget.types import Attribution

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = ["ImportResult", "import_recipe_data", "import_recipe_file"]

_USAGE_KEYS = ("usage", "records", "usage_records", "history")
_UNIT_LIMIT_KEYS = (
    "limit_credits",
    "credit_limit",
    "limit",
    "credits",
    "monthly_limit",
    "weekly_limit",
    "daily_limit",
)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many records and budgets an import added."""

    records_imported: int
    records_skipped: int
    budgets_imported: int

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {
            "records_imported": self.records_imported,
            "records_skipped": self.records_skipped,
            "budgets_imported": self.budgets_imported,
        }


def import_recipe_file(tracker: CostTracker, path: Path) -> ImportResult:
    """Import a recipe ``cost_tracking.json`` file (see the module docstring for the accepted shape)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return import_recipe_data(tracker, data, source=str(path))


def _first(record: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in record and record[name] not in (None, ""):
            return record[name]
    return None


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return datetime.fromtimestamp(int(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"{where}: timestamp {value!r} is not ISO 8601 or Unix seconds") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise InvalidInputError(f"{where}: a usage record needs a timestamp (ISO 8601 or Unix seconds)")


def import_recipe_data(tracker: CostTracker, data: Any, *, source: str = "data") -> ImportResult:
    """Import already parsed recipe data."""
    if isinstance(data, list):
        usage, budgets = data, None
    elif isinstance(data, dict):
        usage = next((data[k] for k in _USAGE_KEYS if k in data), [])
        budgets = data.get("budgets")
    else:
        raise InvalidInputError(f"{source}: expected a JSON object with 'usage' and 'budgets' (or a list of records)")
    if not isinstance(usage, list):
        raise InvalidInputError(f"{source}: the usage records must be a list")

    # Validate everything before writing anything, so bad input changes nothing.
    planned = [_plan_record(tracker, record, f"{source} record {i + 1}") for i, record in enumerate(usage)]
    budget_plans = _plan_budgets(budgets, source)

    imported = skipped = 0
    for key, milli, pack, attribution, product, detail, when in planned:
        info = tracker.ledger.record(
            key,
            units_milli=milli,
            pack_type=pack,
            attribution=attribution,
            product=product,
            detail=detail,
            now=when,
        )
        if info.replayed:
            skipped += 1
        else:
            imported += 1
            tracker._dispatched(info)
    for name, options in budget_plans:
        tracker.set_budget(name, **options)
    return ImportResult(imported, skipped, len(budget_plans))


def _plan_record(tracker: CostTracker, record: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: each usage record must be an object")
    model = _first(record, "model", "model_name") or "kling-v1"
    duration = _first(record, "duration", "duration_seconds")
    mode = _first(record, "mode", "quality")
    credits = _first(record, "credits", "credits_used", "units", "cost_credits")
    try:
        quote = tracker.quote(str(model), duration=None if duration is None else str(duration), mode=mode)
        milli = quote.units_milli if credits is None else units_to_milli(str(credits), "credits")
    except KlingBudgetError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    when = _timestamp(_first(record, "timestamp", "created_at", "time", "date"), where)
    job_id = _first(record, "job_id", "id", "task_id")
    key = (
        str(job_id)
        if job_id is not None
        else "import-" + hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]
    )
    attribution = Attribution(
        project=str(_first(record, "project_id", "project") or ""),
        user=str(_first(record, "user_id", "user") or ""),
        model=quote.model,
    )
    detail = {"params": dict(quote.params), "imported_from": "recipe", "recipe_record": record}
    return key, milli, quote.pack_type, attribution, quote.product, detail, when


def _plan_budgets(budgets: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    if budgets in (None, {}, []):
        return []
    if isinstance(budgets, dict):
        items = [({"project_id": key, **value} if isinstance(value, dict) else None) for key, value in budgets.items()]
    elif isinstance(budgets, list):
        items = list(budgets)
    else:
        raise InvalidInputError(f"{source}: 'budgets' must be an object keyed by project id or a list")
    plans = []
    for i, item in enumerate(items):
        where = f"{source} budget {i + 1}"
        if not isinstance(item, dict):
            raise InvalidInputError(f"{where}: each budget must be an object")
        project = _first(item, "project_id", "project", "name")
        if not project:
            raise InvalidInputError(f"{where}: a budget needs a project_id")
        unit_key = next((k for k in _UNIT_LIMIT_KEYS if item.get(k) not in (None, "")), None)
        period = str(item.get("period") or (unit_key or "monthly").split("_")[0])
        if period not in ("daily", "weekly", "monthly", "total"):
            period = "monthly"
        threshold = item.get("alert_threshold")
        alert_at: list[int] = [50, 80, 100]
        if threshold is not None:
            value = Decimal(str(threshold))
            percent = int(value * 100) if value <= 1 else int(value)
            alert_at = sorted({percent, 100})
        options = {
            "project_id": str(project),
            "limit_units": None if unit_key is None else str(item[unit_key]),
            "limit_usd": None
            if item.get("limit_usd", item.get("budget_usd")) is None
            else str(item.get("limit_usd", item.get("budget_usd"))),
            "period": period,
            "alert_at": alert_at,
        }
        if options["limit_units"] is None and options["limit_usd"] is None:
            raise InvalidInputError(
                f"{where}: no limit found; expected one of {', '.join(_UNIT_LIMIT_KEYS)} or limit_usd"
            )
        try:
            from kling_budget.budgets import Budget

            Budget.create(f"recipe-{project}", **_as_budget_args(options))
        except ConfigurationError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        plans.append((f"recipe-{project}", options))
    return plans


def _as_budget_args(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "project": options["project_id"],
        "limit_units": options["limit_units"],
        "limit_usd": options["limit_usd"],
        "period": options["period"],
        "alert_at": options["alert_at"],
    }
