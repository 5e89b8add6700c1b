"""Exact prices for Kling AI API requests, from a versioned TOML price table.

Pure code: the only I/O is reading the packaged or a user-supplied price file. Typical use::

    from kling_budget.pricing import PriceTable, quote_kling_request

    table = PriceTable.default()
    q = table.quote("kling-v2-6", mode="pro", duration=10, sound=True)
    q.units_milli, q.usd                      # 10000, Decimal("1.40")
    quote_kling_request(table, "/v1/images/generations", {"model_name": "kling-v2", "n": 3})

A price overlay adds or overrides models on top of a table (``table.with_overlay(path)``, see
:mod:`kling_budget.pricing.overlay`). The file format and every price choice that the sources leave open
are documented in ``docs/pricing.md``.
"""

from kling_budget.pricing._fields import ACCEPTED_FIELDS, BodyFields, check_body_fields
from kling_budget.pricing._request import SUPPORTED_PATHS, SourceVideo, quote_kling_request
from kling_budget.pricing._schema import PER_KINDS, PriceRow, ProductInfo
from kling_budget.pricing._table import PACKAGED_FILE, PriceTable
from kling_budget.pricing.overlay import OVERLAY_ENV

__all__ = [
    "ACCEPTED_FIELDS",
    "OVERLAY_ENV",
    "PACKAGED_FILE",
    "PER_KINDS",
    "SUPPORTED_PATHS",
    "BodyFields",
    "PriceRow",
    "PriceTable",
    "ProductInfo",
    "SourceVideo",
    "check_body_fields",
    "quote_kling_request",
]
