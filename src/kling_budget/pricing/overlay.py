"""Price overlays: a small file, in the price-table format, that adds or overrides models on top of a table.

Kling ships models before it publishes their unit prices. An overlay lets a user price such a model (or
correct one) without a new release of the packaged table::

    table = PriceTable.default().with_overlay("kling-4-overlay.toml")

The overlay is read with the same parser as a price table (so the same one-line errors, naming the overlay
file and its entry) and merged in the table's own terms:

* every ``(product, model)`` the overlay prices replaces *all* of that model's rows in the table (a model is
  never half from one file and half from the other); other models are added;
* ``[products.<name>]``, ``[pack_types]`` and ``[mode_resolution]`` entries add to or replace the table's;
* ``[aliases.*]`` are added (an overlay alias wins over the table's; a table alias that names a model the
  overlay prices is dropped);
* ``version`` (optional, default the file name) names the overlay; quotes of its rows carry it in
  :attr:`~kling_budget.types.Quote.price_overlay` and keep the table's ``price_version``.

Pure apart from reading the file; :data:`OVERLAY_ENV` is read by :class:`~kling_budget.tracker.CostTracker`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kling_budget.errors import PricingError, UnknownModelError
from kling_budget.pricing._schema import (
    PriceRow,
    ProductInfo,
    TableData,
    _check_rows,
    _expand_entry,
    _opt_date,
    _opt_str,
    _parse_aliases,
    _parse_mode_resolution,
    _parse_packs,
    _parse_products,
    _Where,
    load_document,
    normalise_name,
)

__all__ = ["OVERLAY_ENV", "OVERLAY_HINT", "merge_overlay", "unpriced_message"]

OVERLAY_ENV = "KLING_BUDGET_PRICES_OVERLAY"
"""Environment variable naming a price overlay file (the CLI's ``--prices-overlay``)."""

OVERLAY_HINT = f"add the model with a price overlay (--prices-overlay FILE or {OVERLAY_ENV}, see docs/pricing.md)"
"""What to do about an unknown model, for error messages."""


def unpriced_message(error: PricingError) -> str:
    """One line for a request that cannot be priced; an unknown model names the overlay option first (so a
    client that shortens long messages still shows it)."""
    if isinstance(error, UnknownModelError):
        return f"cannot price this request; {OVERLAY_HINT}: {error}"
    return f"cannot price this request: {error}"


def merge_overlay(base: TableData, text: str, file: str) -> tuple[TableData, str]:
    """Merge the overlay TOML ``text`` (named ``file`` in errors) onto ``base``.

    Returns:
        The merged table data (``version`` stays the base table's) and the overlay's label,
        ``"<version> (<file>)"``.

    Raises:
        PriceTableError: the overlay is not valid; the one-line message names ``file`` and the entry.
    """
    where = _Where(file)
    doc = load_document(text, where)
    currency = _opt_str(doc, "currency", "top level", where)
    if currency is not None and currency != "USD":
        where.fail("top level", f'currency must be "USD" (list prices are in US dollars), got {currency!r}')
    version = _opt_str(doc, "version", "top level", where) or Path(file).stem
    label = f"{version} ({file})"
    if not doc.get("prices") and not doc.get("aliases"):
        where.fail("top level", "an overlay needs at least one [[prices]] entry or an [aliases.<scope>] table")

    pack_usd, pack_nano = dict(base.pack_usd), dict(base.pack_nano)
    if "pack_types" in doc:
        usd, nano = _parse_packs(doc, where)
        pack_usd.update(usd)
        pack_nano.update(nano)
    mode_resolution = dict(base.mode_resolution)
    if "mode_resolution" in doc:
        mode_resolution.update(_parse_mode_resolution(doc, where))
    products: dict[str, ProductInfo] = dict(base.products)
    if "products" in doc:
        products.update(_parse_products(doc, pack_usd, where))

    added = _overlay_rows(doc, products, label, where)
    replaced = {(row.product, row.model) for row in added}
    rows = (*(row for row in base.rows if (row.product, row.model) not in replaced), *added)
    _check_rows(added, where)
    aliases = _merge_aliases(base.aliases, _parse_aliases(doc, products, rows, where), rows)
    merged = dataclasses.replace(
        base,
        pack_usd=pack_usd,
        pack_nano=pack_nano,
        mode_resolution=mode_resolution,
        products=products,
        aliases=aliases,
        rows=rows,
    )
    return merged, label


def _overlay_rows(
    doc: Mapping[str, Any], products: Mapping[str, ProductInfo], label: str, where: _Where
) -> list[PriceRow]:
    raw = doc.get("prices", [])
    if not isinstance(raw, list):
        where.fail("top level", "prices must be an array of [[prices]] tables")
    default_effective = _opt_date(doc, "effective", "top level", where)
    rows: list[PriceRow] = []
    for index, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict):
            where.fail(f"[[prices]] entry {index}", "must be a table")
        expanded = _expand_entry(entry, index, products, default_effective, where)
        rows.extend(dataclasses.replace(row, overlay=label) for row in expanded)
    return rows


def _merge_aliases(
    base: Mapping[str, Mapping[str, str]], overlay: Mapping[str, Mapping[str, str]], rows: Sequence[PriceRow]
) -> dict[str, dict[str, str]]:
    """The base aliases that still name only what they did, plus the overlay's (which win)."""
    models_by_product: dict[str, set[str]] = {}
    for row in rows:
        models_by_product.setdefault(row.product, set()).add(row.model)
    every_model = set().union(*models_by_product.values())
    merged: dict[str, dict[str, str]] = {}
    for scope, mapping in base.items():
        models = every_model if scope == "all" else models_by_product.get(scope, set())
        merged[scope] = {alias: target for alias, target in mapping.items() if alias not in models}
    for scope, mapping in overlay.items():
        merged.setdefault(normalise_name(scope), {}).update(mapping)
    return merged
