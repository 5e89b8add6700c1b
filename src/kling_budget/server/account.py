"""Kling's account routes on the gateway: ``GET /account/costs``, ``POST /account/billing/package|balance``.

Authenticated like every Kling route (a made-up key is 401), and answered in Kling's shapes, so a client's
"test credentials" or health check works through the gateway. What a caller gets depends on who it is:

* **A virtual key** gets its own view, from the ledger; never the account's, never another tenant's.

  - ``GET /account/costs``: one "resource pack" per budget the key owns (scoped to its project, its user or the
    key itself, as for denials: :func:`~kling_budget.server.exposure.owns_budget`) whose scope matches the key:
    ``resource_pack_name`` the budget's name, ``total_quantity`` its limit, ``remaining_quantity`` what is left
    now (committed and held counted), ``effective_time``/``invalid_time`` its current window (no end for a
    total budget), ``resource_pack_type`` ``constant_period`` (windowed) or ``decreasing_total``, ``status``
    ``online`` or ``runOut``. A units limit is shown in units of the budget's pack type; a dollars-only budget
    in dollars (its name then ends in ``(USD)``). Budgets wider than the key (the whole account, a tag, a model)
    are not listed: their remaining figure is other tenants' spending. ``start_time``/``end_time`` (Unix ms,
    optional) keep the budgets whose current window overlaps them; ``resource_pack_name`` one budget.
  - ``POST /account/billing/package`` / ``balance``: one row per task of this key the ledger committed (both API
    designs), newest commit first, in Kling's row shape and paging (:mod:`kling_budget.kling.paging`):
    ``deduction_amount`` is what was committed — units on the package ledger; dollars (``currency`` ``USD``) on
    the balance ledger, for tasks Kling charged from a cash balance. The gateway keeps budgets, not Kling's packs
    or balance, so ``package_id`` and the before/after figures are ``""`` (a ``package_name``/``package_id``
    filter matches nothing). Calls without a Kling task id (synchronous endpoints) are not listed.

* **The admin token** (``KLING_BUDGET_ADMIN_TOKEN``) gets Kling's own answer for the whole account, passed
  through read-only with the gateway's credentials (scrubbed like any Kling answer). The query or body is
  checked first; nothing else is reachable with the admin token on Kling's routes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kling_budget.budgets import BudgetStatus
from kling_budget.designs import split_model_path
from kling_budget.errors import InvalidInputError
from kling_budget.kling._core import ACCOUNT_COSTS_PATH, BILLING_BALANCE_PATH, BILLING_PACKAGE_PATH
from kling_budget.kling.paging import BALANCE, PACKAGE, Entry, Listing, ListQueryError, Query, page
from kling_budget.kling.tasks import ChargeType, parse_task
from kling_budget.money import milli_to_units, nano_to_usd, units_text, usd_text
from kling_budget.server.exposure import owns_budget
from kling_budget.server.keys import CredentialError, VirtualKey, split_bearer
from kling_budget.server.proxy import Proxy, kling_error, request_id
from kling_budget.server.request_json import parse_list_query, parse_object
from kling_budget.server.task_lists import CommittedTask, newest_committed
from kling_budget.server.task_store import dumps, now_micros
from kling_budget.types import Attribution
from kling_budget.windows import Period, to_micros

__all__ = ["AccountRoutes", "budget_pack"]

logger = logging.getLogger("kling_budget.gateway")

_MAX_TIME_DIGITS = 15
_MAX_PACK_NAME = 200
_LEDGERS: dict[str, Listing] = {BILLING_PACKAGE_PATH: PACKAGE, BILLING_BALANCE_PATH: BALANCE}


def _json(envelope: dict[str, Any], http_status: int = 200) -> Response:
    return Response(dumps(envelope), status_code=http_status, media_type="application/json")


def _ms(micros: int | None) -> int | None:
    return None if micros is None else micros // 1000


def budget_pack(status: BudgetStatus) -> dict[str, Any]:
    """One budget as an item of ``resource_pack_subscribe_infos`` (see the module docstring). Pure."""
    budget, window = status.budget, status.window
    name = budget.name
    if budget.limit_units_milli is not None:
        total: Decimal = milli_to_units(budget.limit_units_milli)
        remaining = milli_to_units(status.remaining_units_milli or 0)
    else:
        assert budget.limit_usd_nano is not None
        name += " (USD)"
        total = nano_to_usd(budget.limit_usd_nano)
        remaining = nano_to_usd(status.remaining_usd_nano or 0)
    start = _ms(window.start_us)
    return {
        "resource_pack_name": name,
        "resource_pack_id": f"budget-{budget.id}",
        "resource_pack_type": "decreasing_total" if budget.period is Period.TOTAL else "constant_period",
        "total_quantity": total,
        "remaining_quantity": remaining,
        "purchase_time": start,
        "effective_time": start,
        "invalid_time": _ms(window.end_us),
        "status": "runOut" if status.exhausted else "online",
    }


def _ms_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _MAX_TIME_DIGITS):
        raise InvalidInputError(f"{name} must be a Unix time in ms (a non-negative integer)")
    return int(raw)


def _function(endpoint: str) -> str:
    """``product_function`` of a task: the 2026 product (``text-to-video``) or the ``/v1`` path's last part."""
    split = split_model_path(endpoint)
    return split[0] if split is not None else endpoint.rstrip("/").rsplit("/", 1)[-1]


def _sound(value: Any) -> str:
    if value in (None, False, "", "off"):
        return "off"
    return value if isinstance(value, str) else "native"


class AccountRoutes:
    """The three account routes over one proxy (see the module docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.state = proxy.state

    def routes(self) -> list[BaseRoute]:
        """``GET /account/costs``, ``POST /account/billing/package`` and ``POST /account/billing/balance``."""
        return [
            Route(ACCOUNT_COSTS_PATH, self.costs, methods=["GET"], name="account costs"),
            Route(BILLING_PACKAGE_PATH, self.billing, methods=["POST"], name="billing package"),
            Route(BILLING_BALANCE_PATH, self.billing, methods=["POST"], name="billing balance"),
        ]

    def _is_admin(self, request: Request) -> bool:
        token = self.state.config.admin_token
        if token is None:
            return False
        try:
            given = split_bearer(request.headers.get("authorization"))
        except CredentialError:
            return False
        return token.matches(given)

    # ------------------------------------------------------------------ /account/costs

    async def costs(self, request: Request) -> Response:
        """``GET /account/costs``: the key's own budgets as packs, or Kling's answer for the admin token."""
        rid = request_id(request)
        admin = self._is_admin(request)
        key = None if admin else await self.proxy.authenticated(request)
        if isinstance(key, Response):
            return key
        try:
            start, end = _ms_param(request, "start_time"), _ms_param(request, "end_time")
            name = request.query_params.get("resource_pack_name") or None
            if name is not None and (len(name) > _MAX_PACK_NAME or not name.isprintable()):
                raise InvalidInputError(f"resource_pack_name must be at most {_MAX_PACK_NAME} printable characters")
            if start is not None and end is not None and start > end:
                raise InvalidInputError("start_time must not be after end_time")
        except InvalidInputError as exc:
            return kling_error(400, 1201, str(exc), rid)
        if key is None:
            params = {k: str(v) for k, v in (("start_time", start), ("end_time", end)) if v is not None}
            if name is not None:
                params["resource_pack_name"] = name
            return await self._pass_through(request, "GET", ACCOUNT_COSTS_PATH, params=params)
        try:
            packs = await self.state.run_sync(self._own_packs, key, start, end, name)
        except Exception:
            logger.exception("ledger unavailable on account costs", extra={"request_id": rid})
            return kling_error(503, 5001, "the gateway's ledger is unavailable; try again", rid)
        data = {"code": 0, "msg": "success", "resource_pack_subscribe_infos": packs}
        return _json({"code": 0, "message": "SUCCEED", "request_id": rid, "data": data})

    def _own_packs(self, key: VirtualKey, start: int | None, end: int | None, name: str | None) -> list[dict[str, Any]]:
        packs = []
        for status in self.state.ledger.statuses():
            budget, window = status.budget, status.window
            mine = Attribution(
                project=key.project, user=key.user, api_key=key.name, model=budget.scope.model, tags=key.tags
            )
            if not (owns_budget(key, budget) and budget.scope.matches(mine)):
                continue
            if name is not None and budget.name != name:
                continue
            if end is not None and to_micros(window.start) > end * 1000:
                continue
            if start is not None and window.end is not None and to_micros(window.end) <= start * 1000:
                continue
            packs.append(budget_pack(status))
        return packs

    # ------------------------------------------------------------------ billing ledgers

    async def billing(self, request: Request) -> Response:
        """``POST /account/billing/package|balance``: the key's committed tasks, or Kling's answer for the admin."""
        rid = request_id(request)
        path = request.url.path.rstrip("/")
        listing = _LEDGERS[path]
        admin = self._is_admin(request)
        key = None if admin else await self.proxy.authenticated(request)
        if isinstance(key, Response):
            return key
        raw = await request.body()
        try:
            query = parse_list_query(raw, listing, now_micros() // 1000)
        except ListQueryError as exc:
            return kling_error(400, exc.code, str(exc), rid)
        if key is None:  # the body is a bounded JSON object by now
            return await self._pass_through(request, "POST", path, body=parse_object(raw) if raw.strip() else {})
        try:
            data = await self.state.run_sync(self._ledger_page, key, listing, query)
        except Exception:
            logger.exception("ledger unavailable on a billing ledger", extra={"request_id": rid})
            return kling_error(503, 5001, "the gateway's ledger is unavailable; try again", rid)
        return _json({"code": 0, "message": "SUCCEED", "request_id": rid, "data": data})

    def _ledger_page(self, key: VirtualKey, listing: Listing, query: Query) -> dict[str, Any]:
        names = query.values("api_key_name")
        if (names is not None and key.name not in names) or query.values("package_name") or query.values("package_id"):
            return page(listing, query, ())  # rows of another key, or of Kling's packs: none are this key's
        return page(listing, query, self._entries(key, listing, query), render=lambda item: item)

    def _entries(self, key: VirtualKey, listing: Listing, query: Query) -> Iterator[Entry]:
        after = query.after
        committed = newest_committed(
            self.state.tasks.backend,
            key.id,
            start_ms=query.start,
            end_ms=query.end,
            after=None if after is None else (after[0], str(after[1])),
            pack_types=query.values("product_type"),
            chunk=min(query.limit + 1, 500),
        )
        for task in committed:
            row = self._row(key, listing, task)
            if row is not None:
                keys = {"api_key_name": key.name, "product_type": task.pack_type, "package_name": "", "package_id": ""}
                yield task.committed_ms, task.row.reservation_id, keys, row

    @staticmethod
    def _row(key: VirtualKey, listing: Listing, task: CommittedTask) -> dict[str, Any] | None:
        """The task's row on ``listing``'s ledger, ``None`` when the task belongs on the other one."""
        try:
            charges = parse_task(task.row.data or {}).charges
        except InvalidInputError:
            charges = ()
        cash = [c for c in charges if c.charge_type is ChargeType.CASH]
        paid_in_cash = bool(cash) and all(c.charge_type is ChargeType.CASH or not c.amount for c in charges)
        if paid_in_cash != (listing is BALANCE):
            return None
        params = task.params
        row: dict[str, Any] = {
            "task_id": task.row.task_id,
            "api_key_name": key.name,
            "product_function": _function(task.row.endpoint),
            "model_name": task.model,
            "resolution": str(params.get("resolution") or ""),
            "duration": str(params.get("duration") or ""),
            "refer_video_input": bool(params.get("video_input")),
            "video_sound": _sound(params.get("sound")),
            "voice_control": bool(params.get("voice_control")),
            "deduction_time": task.committed_ms,
        }
        if listing is PACKAGE:
            return {
                "package_id": "",
                "product_type": task.pack_type,
                **row,
                "unit_before_deduction": "",
                "deduction_amount": units_text(task.units_milli),
                "unit_after_deduction": "",
            }
        list_price = next((c.list_price for c in cash if c.list_price is not None and c.currency == "USD"), None)
        return {
            **row,
            "cash_type": next((c.cash_type for c in cash if c.cash_type), "balance"),
            "balance_before_deduction": "",
            "deduction_amount": usd_text(task.usd_nano),
            "balance_after_deduction": "",
            "list_price": "" if list_price is None else format(list_price, "f"),
            "currency": "USD",
        }

    # ------------------------------------------------------------------ the admin token

    async def _pass_through(
        self,
        request: Request,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> Response:
        """Kling's own answer for the whole account (admin token only), read-only, errors scrubbed."""
        reply = await self.state.upstream.request(method, path, params=params, body=body, operation="account")
        if reply.request_id:
            request.state.upstream_request_id = reply.request_id
        if not reply.ok:
            return self.proxy.pass_error(reply, request_id(request))
        return _json(dict(reply.envelope or {}))
