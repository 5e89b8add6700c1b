"""Prices of the 2026 design's create requests, from the packaged price table.

Interim: :func:`kling_budget.pricing.quote_kling_request` prices only the legacy ``/v1`` paths so far. This
maps a validated :class:`~.products.Request` onto :meth:`PriceTable.quote` the way the table's rows are
keyed (model alias, resolution, seconds, native audio, video input); once the pricing module takes these
paths, the simulator's default pricer calls it instead and this module goes away.

Lengths that follow an input the request does not measure are charged for the longest input Kling accepts
(an omni edit: 15 s, 10 s on kling-o1; motion control: 10 s with ``character_orientation`` image, else 30 s),
as the legacy pricing does.
"""

from __future__ import annotations

from kling_budget.pricing import PriceTable
from kling_budget.simulator.products import Request
from kling_budget.types import Quote

__all__ = ["quote_model_in_path"]

# Reference video limit for motion control with character_orientation "image" (Kling's motion-control docs).
_ORIENTATION_IMAGE_MAX_SECONDS = 10


def quote_model_in_path(table: PriceTable, request: Request) -> Quote:
    """Price a validated 2026-design create request.

    Raises:
        UnknownModelError, UnsupportedOptionError: the table has no price for this combination.
    """
    model = request.product.models[request.model]
    if request.product.name == "motion-control":
        seconds = _ORIENTATION_IMAGE_MAX_SECONDS if request.orientation == "image" else model.longest_input
        return table.quote(request.model, product="motion-control", resolution=request.resolution, duration=seconds)
    return table.quote(
        request.model,
        product="video",
        resolution=request.resolution,
        duration=request.duration if request.duration is not None else model.longest_input,
        sound=request.audio == "native",
        video_input=request.reference_video,
    )
