"""``GET /prices``, ``GET /prices/{product}``, ``POST /quote``: the price table and a dry-run quote (price and
the verdict of every budget it would count against)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kling_budget.budgets import check_admission
from kling_budget.money import units_text, usd_text
from kling_budget.server.admin._base import Operations, bad, not_found, ok
from kling_budget.server.admin._params import Body, Query, json_object
from kling_budget.server.state import GatewayState
from kling_budget.types import Attribution, PackType

op = Operations()

_QUOTE_FIELDS = (
    "model",
    "product",
    "mode",
    "duration",
    "resolution",
    "sound",
    "voice_control",
    "video_input",
    "image_input",
    "n",
    "project",
    "user",
    "api_key",
    "tags",
)


@op("GET", "/prices")
async def _prices(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    table = state.tracker.prices
    return ok(
        {
            "version": table.version,
            "overlay": table.overlay,
            "currency": table.currency,
            "list_usd_per_unit": {p.value: f"{table.list_usd_per_unit(p):f}" for p in PackType},
            "products": [_product_json(state, name) for name in table.products()],
        }
    )


def _product_json(state: GatewayState, name: str) -> dict[str, Any]:
    table = state.tracker.prices
    info = table.product_info(name)
    return {
        "name": info.name,
        "pack_type": info.pack_type.value,
        "description": info.description,
        "default_mode": info.default_mode,
        "default_duration": info.default_duration,
        "default_resolution": info.default_resolution,
        "models": table.models(name),
    }


@op("GET", "/prices/{product}")
async def _product_prices(request: Request, state: GatewayState) -> Response:
    Query(request, ())
    table = state.tracker.prices
    product = request.path_params["product"]
    if product not in table.products():
        not_found(f"unknown product {product[:60]!r}; known: {', '.join(table.products())}")
    rows = [
        {
            "model": r.model,
            "label": r.label,
            "mode": r.mode,
            "resolution": r.resolution,
            "sound": r.sound,
            "voice_control": r.voice_control,
            "video_input": r.video_input,
            "image_input": r.image_input,
            "per": r.per,
            "units": units_text(r.units_milli),
            "durations": list(r.durations),
            "min_duration": r.min_duration,
            "max_duration": r.max_duration,
            "block_seconds": r.block_seconds,
            "max_n": r.max_n,
            "note": r.note,
            "source": r.source,
            "effective": r.effective,
        }
        for r in table.rows(product)
    ]
    return ok({**_product_json(state, product), "rows": rows})


@op("POST", "/quote")
async def _quote(request: Request, state: GatewayState) -> Response:
    body = Body(await json_object(request), _QUOTE_FIELDS, ("model",))
    duration: Any = body.data.get("duration")
    if duration is not None:
        if isinstance(duration, Decimal):
            duration = str(duration)
        if isinstance(duration, bool) or not isinstance(duration, int | str) or len(str(duration)) > 12:
            bad('duration must be seconds as a whole number or a string like "5.04"')
    sound: Any = body.data.get("sound", False)
    if not isinstance(sound, bool | str) or (isinstance(sound, str) and len(sound) > 20):
        bad('sound must be true, false, "on", "off" or "native"')
    tracker = state.tracker
    quote = tracker.quote(
        body.text("model") or "",
        product=body.text("product", "video") or "video",
        mode=body.text("mode"),
        duration=duration,
        resolution=body.text("resolution"),
        sound=sound,
        voice_control=body.boolean("voice_control", False),
        video_input=body.boolean("video_input", False),
        image_input=body.boolean("image_input", False),
        n=body.integer("n", 1, 1, 100) or 1,
    )
    attribution = Attribution(
        project=body.text("project", "") or "",
        user=body.text("user", "") or "",
        api_key=body.text("api_key", "") or "",
        model=quote.model,
        tags=tuple(body.string_list("tags")),
    )

    def verdicts() -> list[dict[str, Any]]:
        ledger = tracker.ledger
        now = ledger.now()
        result = []
        for budget in ledger.matching_budgets(attribution):
            status = ledger.budget_status(budget.name, now=now)
            units = budget.units_delta(quote.pack_type, quote.units_milli)
            denial = check_admission(budget, status.window, status.counters, units, quote.list_usd_nano)
            left_units = status.remaining_units_milli
            left_usd = status.remaining_usd_nano
            result.append(
                {
                    "budget": budget.name,
                    "hard": budget.hard,
                    "allowed": denial is None,
                    "reason": denial.message() if denial else "",
                    "remaining_units_after": None if left_units is None else units_text(left_units - units),
                    "remaining_usd_after": None if left_usd is None else usd_text(left_usd - quote.list_usd_nano),
                    "resets_at": status.window.end.isoformat() if status.window.end else None,
                }
            )
        return result

    checks = await state.run_sync(verdicts)
    return ok(
        {
            "model": quote.model,
            "product": quote.product,
            "pack_type": quote.pack_type.value,
            "units": units_text(quote.units_milli),
            "usd": usd_text(quote.list_usd_nano),
            "price_version": quote.price_version,
            "price_overlay": quote.price_overlay or None,
            "description": quote.describe(),
            "params": dict(quote.params),
            "breakdown": [{"label": line.label, "units": units_text(line.units_milli)} for line in quote.breakdown],
            "allowed": all(c["allowed"] for c in checks),
            "budgets": checks,
        }
    )
