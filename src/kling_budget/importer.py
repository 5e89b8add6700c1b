"""Import the "Kling AI cost controls" recipe's ``cost_tracking.json`` into the ledger.

The recipe keeps one JSON object with its budgets and a list of usage records. Field names vary between
copies of the recipe, so the common spellings are accepted:

* usage list under ``usage``, ``records``, ``usage_records`` or ``history`` (or the file is the list);
  each record has ``job_id`` (or ``id``/``task_id``), ``project_id`` (or ``project``), ``model``,
  ``duration``, optional ``mode``, ``user_id``, ``credits``/``credits_used``/``units`` and a
  ``timestamp`` (ISO 8601 or Unix seconds);
* budgets under ``budgets``: an object keyed by project id, or a list with ``project_id``; limits as
  ``limit_credits``/``credit_limit``/``limit``/``credits``/``monthly_limit``/``daily_limit``/``weekly_limit``
  and ``limit_usd``/``budget_usd``; ``period`` daily/weekly/monthly/total (default: the one the limit's
  name gives, else monthly); ``alert_threshold`` (0.8 or 80).

The recipe's "credits" are its own invented scale (10 per 5-second clip, 2× for "kling-pro"), not Kling
units, so by default every record is **re-priced** from the price table by its model and duration (Kling's
default mode, std, unless the record says otherwise) and the recipe's numbers are kept in the record's
detail; a budget keeps its dollar limit and drops its credit limit. Models the price table does not know
(the recipe's ``kling-pro``) need ``model_map`` (``{"kling-pro": "kling-v1-6:pro"}``). If your file holds
real Kling units, pass ``credits="as-units"`` to book them (and credit limits) as recorded.

Each record is recorded at its original time with its job id as the idempotency key, so importing the same
file twice adds nothing. A record without a job id gets a key derived from its content. Everything is
checked before anything is written: a bad record or budget (or a job id already used for a different job)
fails the import with one line naming it, and nothing is imported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kling_budget.budgets import DEFAULT_THRESHOLDS, Budget
from kling_budget.errors import ConfigurationError, InvalidInputError, KlingBudgetError, ReservationNotFoundError
from kling_budget.ledger import ReservationInfo
from kling_budget.money import units_to_milli
from kling_budget.types import Attribution, PackType

if TYPE_CHECKING:
    from kling_budget.tracker import CostTracker

__all__ = ["ImportResult", "import_recipe_data", "import_recipe_file"]

_USAGE_KEYS = ("usage", "records", "usage_records", "history")
_MAX_KEY_LENGTH = 255  # the ledger's limit on an idempotency key
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
    """How many records and budgets an import added (and how many were already there, unchanged)."""

    records_imported: int
    records_skipped: int
    budgets_imported: int
    budgets_unchanged: int = 0
    credit_limits_dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return {
            "records_imported": self.records_imported,
            "records_skipped": self.records_skipped,
            "budgets_imported": self.budgets_imported,
            "budgets_unchanged": self.budgets_unchanged,
            "credit_limits_dropped": self.credit_limits_dropped,
        }


CREDIT_MODES = ("reprice", "as-units")


class _Planned(NamedTuple):
    """One usage record, validated and priced, ready to be written."""

    where: str
    key: str
    milli: int
    pack: PackType
    attribution: Attribution
    product: str
    detail: dict[str, Any]
    when: datetime

    @property
    def signature(self) -> tuple[object, ...]:
        """What makes two records the same job (so that writing this one again is a no-op replay)."""
        return ("record", self.milli, self.pack, self.attribution, self.product)


def _signature(info: ReservationInfo) -> tuple[object, ...]:
    return (info.kind, info.units_milli, info.pack_type, info.attribution, info.product)


def import_recipe_file(
    tracker: CostTracker, path: Path, *, credits: str = "reprice", model_map: Mapping[str, str] | None = None
) -> ImportResult:
    """Import a recipe ``cost_tracking.json`` file (see the module docstring for the accepted shape)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text (expected the recipe's cost_tracking.json)") from None
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return import_recipe_data(tracker, data, source=str(path), credits=credits, model_map=model_map)


def _first(record: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in record and record[name] not in (None, ""):
            return record[name]
    return None


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(int(value), tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise InvalidInputError(f"{where}: timestamp {value} is not a date in Unix seconds") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"{where}: timestamp {value!r} is not ISO 8601 or Unix seconds") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise InvalidInputError(f"{where}: a usage record needs a timestamp (ISO 8601 or Unix seconds)")


def import_recipe_data(
    tracker: CostTracker,
    data: Any,
    *,
    source: str = "data",
    credits: str = "reprice",
    model_map: Mapping[str, str] | None = None,
) -> ImportResult:
    """Import already parsed recipe data. Every record and budget is checked first: if any is bad, the
    error names it and nothing is imported."""
    if credits not in CREDIT_MODES:
        raise InvalidInputError(f"credits must be one of {', '.join(CREDIT_MODES)}, got {credits!r}")
    models = _parse_model_map(model_map or {})
    if isinstance(data, list):
        usage, budgets = data, None
    elif isinstance(data, dict):
        found = [k for k in _USAGE_KEYS if k in data]
        if not found and "budgets" not in data:
            raise InvalidInputError(
                f"{source}: no usage records or budgets found; expected 'records' "
                f"(or {', '.join(k for k in _USAGE_KEYS if k != 'records')}) and/or 'budgets'"
            )
        usage = data[found[0]] if found else []
        budgets = data.get("budgets")
    else:
        raise InvalidInputError(f"{source}: expected a JSON object with 'records' and 'budgets' (or a list of records)")
    if not isinstance(usage, list):
        raise InvalidInputError(f"{source}: the usage records must be a list")

    # Validate everything before writing anything, so bad input changes nothing.
    planned = [
        _plan_record(tracker, record, f"{source} record {i + 1}", credits, models) for i, record in enumerate(usage)
    ]
    _check_keys(tracker, planned)
    budget_plans, dropped = _plan_budgets(budgets, source, credits)

    imported = skipped = 0
    for plan in planned:
        info = tracker.ledger.record(
            plan.key,
            units_milli=plan.milli,
            pack_type=plan.pack,
            attribution=plan.attribution,
            product=plan.product,
            detail=plan.detail,
            now=plan.when,
        )
        if info.replayed:
            skipped += 1
        else:
            imported += 1
            tracker._dispatched(info)
    changed = 0
    for budget in budget_plans:
        try:
            unchanged = tracker.get_budget(budget.name) == budget
        except ConfigurationError:  # no such budget yet
            unchanged = False
        if not unchanged:
            tracker.set_budget(budget)
            changed += 1
    return ImportResult(imported, skipped, changed, len(budget_plans) - changed, dropped)


def _parse_model_map(model_map: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """``{"kling-pro": "kling-v1-6:pro"}`` → ``{"kling-pro": ("kling-v1-6", "pro")}``."""
    parsed: dict[str, tuple[str, str | None]] = {}
    for source_model, target in model_map.items():
        model, _, mode = str(target).partition(":")
        if not source_model or not model:
            raise InvalidInputError(
                f"model map entry {source_model!r}={target!r} must look like kling-pro=kling-v1-6:pro"
            )
        parsed[source_model] = (model, mode or None)
    return parsed


def _check_keys(tracker: CostTracker, planned: list[_Planned]) -> None:
    """A job id used twice for different jobs, in the file or against the ledger, fails the whole import."""
    seen: dict[str, _Planned] = {}
    for plan in planned:
        earlier = seen.setdefault(plan.key, plan)
        if earlier.signature != plan.signature:
            first = " ".join(earlier.where.rsplit(" ", 2)[-2:])  # "record 3"
            raise InvalidInputError(f"{plan.where}: job id {plan.key!r} is also used by {first} for a different job")
    for plan in seen.values():
        try:
            existing = tracker.ledger.get_reservation(plan.key)
        except ReservationNotFoundError:
            continue
        if _signature(existing) != plan.signature:
            raise InvalidInputError(
                f"{plan.where}: job id {plan.key!r} is already in the ledger for a different job "
                f"({existing.attribution.model}, {existing.units} units, project {existing.attribution.project!r})"
            )


def _plan_record(
    tracker: CostTracker, record: Any, where: str, credit_mode: str, models: Mapping[str, tuple[str, str | None]]
) -> _Planned:
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: each usage record must be an object")
    model = str(_first(record, "model", "model_name") or "kling-v1")
    duration = _first(record, "duration", "duration_seconds")
    mode = _first(record, "mode", "quality")
    if model in models:
        model, mapped_mode = models[model]
        mode = mapped_mode or mode
    credits = _first(record, "credits", "credits_used", "units", "cost_credits")
    try:
        quote = tracker.quote(model, duration=None if duration is None else str(duration), mode=mode)
        booked = credits if credit_mode == "as-units" else None
        milli = quote.units_milli if booked is None else units_to_milli(str(booked), "credits")
    except KlingBudgetError as exc:
        hint = " (map it with --model-map NAME=MODEL[:MODE])" if "unknown model" in str(exc) else ""
        raise InvalidInputError(f"{where}: {exc}{hint}") from None
    if milli < 0:
        raise InvalidInputError(f"{where}: credits cannot be negative, got {credits}")
    when = _timestamp(_first(record, "timestamp", "created_at", "time", "date"), where)
    job_id = _first(record, "job_id", "id", "task_id")
    key = (
        str(job_id)
        if job_id is not None
        else "import-" + hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]
    )
    if not key.strip() or len(key) > _MAX_KEY_LENGTH:
        raise InvalidInputError(f"{where}: job id must be non-blank and at most {_MAX_KEY_LENGTH} characters")
    attribution = Attribution(
        project=str(_first(record, "project_id", "project") or ""),
        user=str(_first(record, "user_id", "user") or ""),
        model=quote.model,
    )
    detail = {"params": dict(quote.params), "imported_from": "recipe", "recipe_record": record}
    return _Planned(where, key, milli, quote.pack_type, attribution, quote.product, detail, when)


def _alert_at(threshold: Any, where: str) -> list[int]:
    """The recipe's ``alert_threshold`` (a fraction like 0.8, or a percentage like 80) plus 100 %."""
    if threshold is None:
        return list(DEFAULT_THRESHOLDS)
    try:
        value = Decimal(str(threshold))
    except InvalidOperation:
        value = Decimal("NaN")
    if isinstance(threshold, bool) or not value.is_finite() or value <= 0:
        raise InvalidInputError(
            f"{where}: alert_threshold {threshold!r} is not a fraction like 0.8 or a percentage like 80"
        )
    percent = int(value * 100) if value <= 1 else int(value)
    return sorted({percent, 100})


def _plan_budgets(budgets: Any, source: str, credit_mode: str) -> tuple[list[Budget], int]:
    if budgets in (None, {}, []):
        return [], 0
    if isinstance(budgets, dict):
        items = [({"project_id": key, **value} if isinstance(value, dict) else None) for key, value in budgets.items()]
    elif isinstance(budgets, list):
        items = list(budgets)
    else:
        raise InvalidInputError(f"{source}: 'budgets' must be an object keyed by project id or a list")
    plans = []
    dropped = 0
    for i, item in enumerate(items):
        where = f"{source} budget {i + 1}"
        if not isinstance(item, dict):
            raise InvalidInputError(f"{where}: each budget must be an object")
        project = _first(item, "project_id", "project", "name")
        if not project:
            raise InvalidInputError(f"{where}: a budget needs a project_id")
        where = f"{where} ({project})"
        unit_key = next((k for k in _UNIT_LIMIT_KEYS if item.get(k) not in (None, "")), None)
        limit_usd = _first(item, "limit_usd", "budget_usd")
        if unit_key is None and limit_usd is None:
            raise InvalidInputError(
                f"{where}: no limit found; expected one of {', '.join(_UNIT_LIMIT_KEYS)} or limit_usd"
            )
        if credit_mode == "reprice" and unit_key is not None:
            if limit_usd is None:
                raise InvalidInputError(
                    f"{where}: only a credit limit, and recipe credits are not Kling units; "
                    "add limit_usd or import with --credits as-units"
                )
            unit_key = None
            dropped += 1
        period = _first(item, "period")
        if period is None:  # daily_limit / weekly_limit / monthly_limit name their period
            period = unit_key.split("_")[0] if unit_key and unit_key.endswith("ly_limit") else "monthly"
        try:
            budget = Budget.create(
                str(project),
                project=str(project),
                limit_units=None if unit_key is None else str(item[unit_key]),
                limit_usd=None if limit_usd is None else str(limit_usd),
                period=str(period),
                alert_at=_alert_at(item.get("alert_threshold"), where),
            )
        except ConfigurationError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        plans.append(budget)
    return plans, dropped
