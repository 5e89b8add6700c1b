"""Admitting a tenant's create before anything is reserved: bounded JSON, accepted fields, client fields, price.

Both API designs go through the same steps; the client's ``external_task_id`` and ``callback_url`` are read where
the design keeps them (top level on ``/v1``, under ``options`` on the 2026 design: :mod:`kling_budget.designs`).
Every step is bounded by the body cap (:mod:`kling_budget.server.limits`) and checks before it converts:
numbers are short plain decimals (:mod:`kling_budget.server.request_json`, :mod:`kling_budget.numeric`), fields
come from the per-endpoint allow-list (:func:`kling_budget.pricing.check_body_fields`), a ``callback_url`` is
checked for syntax and where it resolves (:mod:`kling_budget.server.callback_guard`), and a video extension is
priced with its source video's model and mode when the gateway made that video for this key. A small body is
handled on the event loop (microseconds); a large one (base64 images) is parsed and priced in a worker thread,
so no request holds the loop for the time it takes to read megabytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from kling_budget.designs import create_option
from kling_budget.errors import InvalidInputError, PricingError
from kling_budget.pricing import SourceVideo, check_body_fields, quote_kling_request
from kling_budget.pricing.overlay import unpriced_message
from kling_budget.server.callback_guard import CallbackURLError, parse_callback_url
from kling_budget.server.keys import VirtualKey
from kling_budget.server.request_json import BadJSONError, parse_object
from kling_budget.server.state import GatewayState
from kling_budget.types import Quote

__all__ = ["MAX_EXTERNAL_ID", "Admitted", "CreateAdmission", "Refusal"]

MAX_EXTERNAL_ID = 200
_OFF_LOOP_BYTES = 64 * 1024
_EXTEND_PATH = "/v1/videos/video-extend"
_T = TypeVar("_T")


class Refusal(Exception):
    """The create is refused before anything was reserved: answer Kling's envelope with this status and code."""

    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Admitted:
    """A create that may be reserved: its body, its exact price and the client's own fields."""

    body: dict[str, Any]
    quote: Quote
    client_external: str | None
    client_callback: str | None


class CreateAdmission:
    """Checks and prices creates for one gateway (see the module docstring)."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def admit(self, path: str, raw: bytes, key: VirtualKey) -> Admitted:
        """Parse, check and price one create body.

        Raises:
            Refusal: 400 with code 1200 (not a JSON object) or 1201 (anything else, named in the message).
        """
        big = len(raw) > _OFF_LOOP_BYTES
        body = await self._run(big, self._parse, path, raw)
        external = _client_external(path, body)
        source = await self._source(path, body, key)
        quote = await self._run(big, self._price, path, body, source)
        callback = await self._callback(path, body)  # last: it may wait on name resolution
        return Admitted(body, quote, external, callback)

    @staticmethod
    async def _run(off_loop: bool, fn: Callable[..., _T], *args: Any) -> _T:
        if off_loop:
            return await anyio.to_thread.run_sync(fn, *args)
        return fn(*args)

    @staticmethod
    def _parse(path: str, raw: bytes) -> dict[str, Any]:
        try:
            body = parse_object(raw)
        except BadJSONError as exc:
            raise Refusal(400, 1200 if exc.not_json else 1201, str(exc)) from None
        try:
            check_body_fields(path, body)
        except PricingError as exc:
            raise Refusal(400, 1201, f"cannot price this request: {exc}") from None
        return body

    def _price(self, path: str, body: dict[str, Any], source: SourceVideo | None) -> Quote:
        try:
            return quote_kling_request(self.state.prices, path, body, source=source)
        except PricingError as exc:
            raise Refusal(400, 1201, unpriced_message(exc)) from None
        except InvalidInputError as exc:
            raise Refusal(400, 1201, str(exc)) from None

    async def _callback(self, path: str, body: dict[str, Any]) -> str | None:
        url = create_option(path, body, "callback_url")
        if url in (None, ""):
            return None
        try:
            await self.state.callback_policy.resolve(parse_callback_url(url))
        except CallbackURLError as exc:
            raise Refusal(400, 1201, str(exc)) from None
        assert isinstance(url, str)
        return url

    async def _source(self, path: str, body: dict[str, Any], key: VirtualKey) -> SourceVideo | None:
        """The source of a video extension, when this key's gateway task produced it (else the worst case)."""
        video_id = body.get("video_id")
        if path != _EXTEND_PATH or not isinstance(video_id, str) or not 0 < len(video_id) <= 200:
            return None
        try:
            found = await self.state.run_sync(self.state.tasks.source_video, key.id, video_id)
        except Exception:
            return None  # priced at the highest extension price: never below what Kling charges
        return None if found is None else SourceVideo(found[0], found[1])


def _client_external(path: str, body: dict[str, Any]) -> str | None:
    external = create_option(path, body, "external_task_id")
    if external in (None, ""):
        return None
    if not isinstance(external, str) or len(external) > MAX_EXTERNAL_ID:
        raise Refusal(400, 1201, f"external_task_id must be a string of at most {MAX_EXTERNAL_ID} characters")
    return external
