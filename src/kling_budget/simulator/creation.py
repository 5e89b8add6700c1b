"""A create request of either design, made ready for the simulator's state: validated, priced, described.

The legacy ``/v1`` endpoints (:mod:`.endpoints`) and the 2026 design's ``/{product}/{model}`` routes
(:mod:`.products`) validate their own bodies; both are priced by one :data:`Pricer` and described by the
same :class:`Facts` (what the billing ledgers report). Pure: no state, no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kling_budget.errors import InvalidInputError, UnknownModelError
from kling_budget.money import units_to_milli
from kling_budget.simulator.endpoints import Endpoint, endpoint_for
from kling_budget.simulator.products import Request, parse_request
from kling_budget.simulator.protocol import SimError
from kling_budget.types import PackType, Quote

__all__ = ["Creation", "Facts", "Pricer", "default_pricer", "prepare"]

log = logging.getLogger("kling_budget.simulator")

#: Prices one create request: ``(path, body) -> Quote``.
Pricer = Callable[[str, Mapping[str, Any]], Quote]

_MODE_RESOLUTION = {"std": "720p", "pro": "1080p"}
# Reference video limit for motion control with character_orientation "image" (Kling's motion-control docs).
_ORIENTATION_IMAGE_MAX_SECONDS = 10


def default_pricer() -> Pricer:
    """Price requests with :func:`kling_budget.pricing.quote_kling_request` and the default price table.

    A 2026 request reaches the pricer as :meth:`Request.pricing_body` (its effective settings); a motion
    control whose character follows the image is priced for the longest reference video Kling then accepts
    (10 s), any other length that follows an unmeasured input for the longest the price table accepts.
    """
    from kling_budget.pricing import PriceTable, quote_kling_request

    table = PriceTable.default()

    def price(path: str, body: Mapping[str, Any]) -> Quote:
        settings = body.get("settings")
        image_led = isinstance(settings, Mapping) and settings.get("character_orientation") == "image"
        input_duration = _ORIENTATION_IMAGE_MAX_SECONDS if path.startswith("/motion-control/") and image_led else None
        return quote_kling_request(table, path, body, input_duration=input_duration)

    return price


@dataclass(frozen=True, slots=True)
class Facts:
    """What the billing ledgers say about a task besides its amounts (``resolution``, ``video_sound`` ...)."""

    resolution: str
    duration: str
    refer_video_input: bool
    video_sound: str
    voice_control: bool


@dataclass(frozen=True, slots=True)
class Creation:
    """A validated, priced create request of either design.

    Attributes:
        legacy: a ``/v1`` request (else the 2026 design).
        path: its create path (``/v1/videos/text2video``, ``/text-to-video/kling-3.0``).
        result: ``"videos"`` or ``"images"``.
        function: ``product_function`` in the billing ledgers.
        model: ``model_name`` (legacy) or the path's model.
        prompt: the prompt text, where ``[sim:...]`` markers are read.
        count: images asked for (``n``); a task holds this many concurrency slots.
        quote_milli / priced: the price, and whether the pricer priced it (else ``unpriced_units``).
        endpoint / body: a legacy request's endpoint and body (its output may depend on a parent video).
        request: a 2026 request, parsed.
    """

    legacy: bool
    path: str
    result: str
    function: str
    pack_type: PackType
    model: str
    prompt: str | None
    external_task_id: str | None
    callback_url: str | None
    watermark: bool
    count: int
    quote_milli: int
    priced: bool
    params: Mapping[str, Any] = field(default_factory=dict)
    endpoint: Endpoint | None = None
    body: Mapping[str, Any] = field(default_factory=dict)
    request: Request | None = None

    def output_duration(self) -> str:
        """Seconds of the video a 2026 request makes: asked for, or priced when it follows an input."""
        request = self.request
        assert request is not None
        if request.duration is not None:
            return str(request.duration)
        priced = self.params.get("duration")
        return str(priced or request.product.models[request.model].longest_input)

    def facts(self, output_duration: str) -> Facts:
        """The ledger's description of a task made from this request, whose output lasts ``output_duration``."""
        request = self.request
        if request is not None:
            return Facts(request.resolution, output_duration, request.reference_video, request.audio, False)
        params = self.params
        resolution = params.get("resolution") or _MODE_RESOLUTION.get(str(params.get("mode")), "")
        return Facts(
            resolution=str(resolution),
            duration=output_duration if self.pack_type is PackType.VIDEO else "",
            refer_video_input=bool(params.get("video_input", False)),
            video_sound="native" if params.get("sound") == "native" else "off",
            voice_control=bool(params.get("voice_control", False)),
        )


def prepare(
    path: str,
    body: Any,
    pricer: Pricer,
    unpriced_units: Decimal | int | str | None,
    warned: set[tuple[str, str]],
    *,
    extra_models: tuple[str, ...] = (),
) -> Creation:
    """Validate and price a create request of either design.

    ``warned`` remembers the ``(path, model)`` pairs already logged as unpriced; ``extra_models`` are accepted
    on ``/v1`` endpoints beyond their own model lists (``SimulatorConfig.extra_models``).

    Raises:
        SimError: 1202 no create route at ``path``; 1200 the body is not a JSON object; 1203 unknown model;
            1201 a missing or illegal field (or, with ``unpriced_units`` ``None``, a request with no price).
    """
    endpoint = endpoint_for(path)
    if endpoint is None:
        request = parse_request(path, body)
        billed = request.pricing_body()
        quote = _price(pricer, request.path, request.product.pack_type, billed, request.model, unpriced_units, warned)
        return Creation(
            legacy=False,
            path=request.path,
            result="videos",
            function=request.product.function,
            pack_type=request.product.pack_type,
            model=request.model,
            prompt=request.prompt,
            external_task_id=request.external_task_id,
            callback_url=request.callback_url,
            watermark=request.watermark,
            count=1,
            quote_milli=quote[0],
            priced=quote[1] is not None,
            params=quote[1].params if quote[1] is not None else {},
            request=request,
        )
    if not isinstance(body, dict):
        raise SimError(1200, "the request body must be a JSON object")
    model = endpoint.check(body, extra_models)
    quote = _price(pricer, endpoint.path, endpoint.pack_type, body, model, unpriced_units, warned)
    prompt = body.get("prompt")
    return Creation(
        legacy=True,
        path=endpoint.path,
        result=endpoint.result,
        function=endpoint.function,
        pack_type=endpoint.pack_type,
        model=model,
        prompt=prompt if isinstance(prompt, str) else None,
        external_task_id=body.get("external_task_id") or None,
        callback_url=body.get("callback_url") or None,
        watermark=bool((body.get("watermark_info") or {}).get("enabled", False)),
        count=int(body.get("n") or 1) if endpoint.pack_type is PackType.IMAGE else 1,
        quote_milli=quote[0],
        priced=quote[1] is not None,
        params=quote[1].params if quote[1] is not None else {},
        endpoint=endpoint,
        body=body,
    )


def _price(
    pricer: Pricer,
    path: str,
    pack_type: PackType,
    body: Mapping[str, Any],
    model: str,
    unpriced_units: Decimal | int | str | None,
    warned: set[tuple[str, str]],
) -> tuple[int, Quote | None]:
    """The quote in milli-units and the quote itself (``None``: unpriced, charged ``unpriced_units``)."""
    try:
        quote = pricer(path, body)
    except InvalidInputError as exc:
        if unpriced_units is None:
            raise SimError(1203 if isinstance(exc, UnknownModelError) else 1201, str(exc)) from None
        key = (path, model)
        if key not in warned:
            warned.add(key)
            log.warning("no price for %s %s (%s); charging %s units", path, model or "-", exc, unpriced_units)
        return units_to_milli(unpriced_units, "unpriced_units"), None
    if quote.pack_type is not pack_type:
        log.warning("pricing bills %s from the %s pack; Kling uses %s", path, quote.pack_type, pack_type)
    return quote.units_milli, quote
