"""``kling-budget price``: the exact price of a request, before it is sent."""

from __future__ import annotations

from typing import Any

import click

from kling_budget.cli._common import AppContext, json_option, pass_app, print_json, print_table
from kling_budget.errors import UnknownModelError
from kling_budget.money import format_units, format_usd
from kling_budget.pricing.overlay import OVERLAY_HINT
from kling_budget.types import Quote


def quote_options(fn: click.decorators.FC) -> click.decorators.FC:
    """The options that describe one Kling request (shared by price, check, reserve, record)."""
    options = [
        click.option("--model", "-m", default="kling-v1", show_default=True, help="Model name (aliases accepted)."),
        click.option(
            "--product",
            default="video",
            show_default=True,
            help="video, image, try-on, lip-sync, tts, video-extend ... (see 'price --list').",
        ),
        click.option("--mode", help="std or pro (legacy video models)."),
        click.option("--duration", "-d", help="Seconds of output (5, 10; 3-15 for 3.x models)."),
        click.option("--resolution", help="720p, 1080p or 4k (per-second models)."),
        click.option("--sound", type=click.Choice(["on", "off"]), default="off", show_default=True),
        click.option("--voice-control", is_flag=True, help="Voice control (priced for kling-v2-6 audio)."),
        click.option("--video-input", is_flag=True, help="A reference video is given (omni / O1 models)."),
        click.option("--image-input", is_flag=True, help="Image-to-image generation (a reference image is given)."),
        click.option("-n", "n", type=int, default=1, show_default=True, help="Images per request."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_quote(app: AppContext, **params: object) -> Quote:
    """Price the request described by the shared quote options."""
    tracker = app.tracker()
    try:
        return _quote(tracker, params)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{exc}; {OVERLAY_HINT}") from None


def _quote(tracker: Any, params: dict[str, object]) -> Quote:
    return tracker.quote(  # type: ignore[no-any-return]
        str(params["model"]),
        product=str(params["product"]),
        mode=params.get("mode"),
        duration=params.get("duration"),
        resolution=params.get("resolution"),
        sound=params.get("sound") == "on",
        voice_control=bool(params.get("voice_control")),
        video_input=bool(params.get("video_input")),
        image_input=bool(params.get("image_input")),
        n=int(params.get("n") or 1),  # type: ignore[call-overload]
    )


def quote_dict(quote: Quote) -> dict[str, object]:
    """A quote as JSON-ready data; ``price_overlay`` is the overlay that priced it, or ``None``."""
    return {
        "model": quote.model,
        "product": quote.product,
        "pack_type": quote.pack_type.value,
        "units": str(quote.units),
        "usd": str(quote.usd),
        "params": dict(quote.params),
        "breakdown": [{"label": line.label, "units": format_units(line.units_milli)} for line in quote.breakdown],
        "price_version": quote.price_version,
        "price_overlay": quote.price_overlay or None,
        "source": quote.source,
        "effective": quote.effective,
    }


@click.command()
@quote_options
@click.option("--list", "list_models", is_flag=True, help="List priced products and models instead.")
@json_option
@pass_app
def price(app: AppContext, /, list_models: bool, as_json: bool, **params: object) -> None:
    """Show the exact price of a Kling request, in units and dollars, with its breakdown.

    \b
    Example:
      kling-budget price --model kling-v2-6 --mode pro --duration 10 --sound on --json
      kling-budget price --product image --model kling-v2 -n 4
    """
    if list_models:
        table = app.tracker().prices
        listing = {product: table.models(product) for product in table.products()}
        if as_json:
            print_json({"price_version": table.version, "price_overlay": table.overlay, "products": listing})
        else:
            print_table(
                f"Price table {table.version}" + (f" + overlay {table.overlay}" if table.overlay else ""),
                ["product", "models"],
                [[product, ", ".join(models)] for product, models in listing.items()],
            )
        return
    quote = build_quote(app, **params)
    if as_json:
        print_json({**quote_dict(quote), "price_table": _table_dict(app)})
        return
    rows = [[line.label, format_units(line.units_milli)] for line in quote.breakdown]
    rows.append(["total", f"{format_units(quote.units_milli)} {quote.pack_type.value} units"])
    print_table(f"{quote.model} {quote.product}", ["item", "units"], rows)
    click.echo(
        f"{format_units(quote.units_milli)} units = {format_usd(quote.list_usd_nano)} at the list price "
        f"({priced_by(quote, app.tracker().prices.path)})"
    )


def priced_by(quote: Quote, table_path: str) -> str:
    """Which table and which overlay priced ``quote``, for people."""
    table = f"price table {quote.price_version}" + ("" if table_path == "<packaged>" else f" from {table_path}")
    return table + (f", overlay {quote.price_overlay}" if quote.price_overlay else "")


def _table_dict(app: AppContext) -> dict[str, object]:
    table = app.tracker().prices
    return {"version": table.version, "path": table.path, "overlay": table.overlay}


COMMANDS = [price]
