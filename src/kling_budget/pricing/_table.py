"""The price table: exact, pure quotes for Kling requests.

Rows are indexed at load time so a quote is a few dict look-ups and integer multiplications.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from importlib import resources
from pathlib import Path
from typing import TypeVar

from kling_budget.errors import InvalidInputError, PriceTableError, UnknownModelError, UnsupportedOptionError
from kling_budget.money import usd_nano_for_units
from kling_budget.numeric import plain_decimal, shown
from kling_budget.pricing._schema import PriceRow, ProductInfo, TableData, normalise_name, parse_table
from kling_budget.pricing.overlay import merge_overlay
from kling_budget.types import PackType, Quote, QuoteLine

__all__ = ["PACKAGED_FILE", "PriceTable"]

PACKAGED_FILE = "kling-2026-11.toml"
"""File name of the packaged price table inside ``kling_budget/prices/``."""

_Key = tuple[str, str, bool, bool, bool]
_T = TypeVar("_T")
_MILLI = 1000
_SOUND_IN = {"on": "native", "native": "native", "off": "off"}
_FEATURES = ("native audio", "voice control", "video input", "image input")
# Durations are seconds: six digits either side of the point is far beyond any priced length.
_DURATION_DIGITS = 6


@dataclass(frozen=True, slots=True)
class _Group:
    """All rows of one (product, model), keyed by variant."""

    product: str
    model: str
    subject: str
    pack_type: PackType
    pack_nano: int
    axis: str
    axis_values: tuple[str, ...]
    default_axis: str | None
    default_duration: int | None
    max_input_duration: int | None
    rows: Mapping[_Key, tuple[PriceRow, ...]]


class PriceTable:
    """A validated, versioned Kling price table that quotes requests exactly.

    Build one with :meth:`default` (the packaged table), :meth:`load` (your own TOML file) or
    :meth:`loads` (TOML text). Instances are immutable and safe to share between threads.

    Attributes:
        version: the table's ``version`` (e.g. ``"2026-11-27"``), copied into every quote.
        path: where it was loaded from; ``"<packaged>"`` for the default table.
        currency: always ``"USD"``.
        description: the file's free-text description.
        overlay: the price overlay applied on top (``"<version> (<file>)"``), or ``None``; see
            :meth:`with_overlay`.
    """

    __slots__ = (
        "_data",
        "_groups",
        "_models",
        "_resolution_mode",
        "_resolve",
        "_resolve_any",
        "currency",
        "description",
        "overlay",
        "path",
        "version",
    )

    def __init__(self, data: TableData, path: str, overlay: str | None = None) -> None:
        """Index already-validated table data; prefer :meth:`default`, :meth:`load` or :meth:`loads`."""
        self._data = data
        self.version = data.version
        self.path = path
        self.overlay = overlay
        self.currency = data.currency
        self.description = data.description
        self._resolution_mode: dict[str, str] = {}
        for mode, resolution in data.mode_resolution.items():
            self._resolution_mode.setdefault(resolution, mode)

        grouped: dict[tuple[str, str], list[PriceRow]] = {}
        for row in data.rows:
            grouped.setdefault((row.product, row.model), []).append(row)
        self._groups = {key: self._build_group(rows) for key, rows in grouped.items()}
        self._models: dict[str, list[str]] = {product: [] for product in data.products}
        for product, model in grouped:
            self._models[product].append(model)

        self._resolve: dict[tuple[str, str], str] = {}
        self._resolve_any: dict[str, dict[str, str]] = {}
        for product, models in self._models.items():
            names = {model: model for model in models}
            for alias, target in data.aliases.get("all", {}).items():
                if target in names:
                    names.setdefault(alias, target)
            for alias, target in data.aliases.get(product, {}).items():
                names[alias] = target
            for name, target in names.items():
                self._resolve[(product, name)] = target
                self._resolve_any.setdefault(name, {})[product] = target

    def _build_group(self, rows: list[PriceRow]) -> _Group:
        first = rows[0]
        info = self._data.products[first.product]
        axis_values = tuple(dict.fromkeys(row.axis_value for row in rows))
        default_mode = _first(row.default_mode for row in rows) or info.default_mode
        default_resolution = _first(row.default_resolution for row in rows) or info.default_resolution
        default_axis: str | None = None
        if first.axis == "mode":
            default_axis = default_mode if default_mode in axis_values else None
        elif first.axis == "resolution":
            if default_resolution in axis_values:
                default_axis = default_resolution
            elif default_mode and self._data.mode_resolution.get(default_mode) in axis_values:
                default_axis = self._data.mode_resolution[default_mode]
        by_key: dict[_Key, list[PriceRow]] = {}
        for row in rows:
            by_key.setdefault(row.key, []).append(row)
        subject = first.model if first.product in ("video", "image") else f"{first.model} {first.product}"
        return _Group(
            product=first.product,
            model=first.model,
            subject=subject,
            pack_type=info.pack_type,
            pack_nano=self._data.pack_nano[info.pack_type],
            axis=first.axis,
            axis_values=axis_values,
            default_axis=default_axis,
            default_duration=_first(row.default_duration for row in rows) or info.default_duration,
            max_input_duration=_first(row.max_input_duration for row in rows),
            rows={key: tuple(value) for key, value in by_key.items()},
        )

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def default(cls) -> PriceTable:
        """The price table shipped with kling-budget (loaded once, then cached)."""
        return _packaged()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Load and validate your own price file.

        Raises:
            PriceTableError: the file is missing, unreadable, not TOML, or not a valid price table;
                the one-line message names the file, the entry and the problem.
        """
        name = os.fspath(path)
        return cls(parse_table(_read(name, "price file"), name), name)

    @classmethod
    def loads(cls, text: str, name: str = "<string>") -> PriceTable:
        """Validate price-table TOML given as text; ``name`` is used as its path in messages."""
        return cls(parse_table(text, name), name)

    def with_overlay(self, path: str | os.PathLike[str]) -> PriceTable:
        """This table with the price overlay file at ``path`` on top (see :mod:`kling_budget.pricing.overlay`).

        Raises:
            PriceTableError: the overlay file is missing, unreadable or invalid (one line naming it and the
                entry), or this table already has an overlay.
        """
        name = os.fspath(path)
        return self.with_overlay_text(_read(name, "price overlay file"), name)

    def with_overlay_text(self, text: str, name: str = "<overlay>") -> PriceTable:
        """This table with the overlay TOML ``text`` on top; ``name`` is used as its file name in messages."""
        if self.overlay is not None:
            raise PriceTableError(f"{name}: price table {self.version} already has the overlay {self.overlay}")
        merged, label = merge_overlay(self._data, text, name)
        return PriceTable(merged, self.path, overlay=label)

    # --- introspection ------------------------------------------------------------------------------

    def products(self) -> list[str]:
        """Declared product names, in file order (``"video"``, ``"image"``, ``"lip-sync"`` ...)."""
        return list(self._data.products)

    def product_info(self, product: str) -> ProductInfo:
        """Pack type, defaults and description of a product."""
        return self._data.products[self._product(product)]

    def models(self, product: str | None = None) -> list[str]:
        """Canonical model names priced for ``product`` (or for any product), in file order."""
        if product is not None:
            return list(self._models[self._product(product)])
        return list(dict.fromkeys(model for models in self._models.values() for model in models))

    def rows(self, product: str | None = None) -> tuple[PriceRow, ...]:
        """Every priced variant (expanded rows), optionally for one product only."""
        if product is None:
            return self._data.rows
        name = self._product(product)
        return tuple(row for row in self._data.rows if row.product == name)

    def aliases(self) -> Mapping[str, Mapping[str, str]]:
        """Alias tables by scope (``"all"`` or a product): ``{alias: canonical}``."""
        return self._data.aliases

    def pricing_axis(self, model: str, *, product: str = "video") -> str:
        """What the model's price depends on besides features: ``"mode"``, ``"resolution"`` or ``""``."""
        product = self._product(product)
        return self._groups[(product, self.canonical_model(model, product))].axis

    def list_usd_per_unit(self, pack_type: PackType | str) -> Decimal:
        """List price in USD of one unit of ``pack_type`` (video $0.14, image $0.0035, try-on $0.07)."""
        try:
            pack = PackType(pack_type)
        except ValueError:
            accepted = ", ".join(p.value for p in PackType)
            raise UnsupportedOptionError(f"unknown pack type {pack_type!r}; accepted: {accepted}") from None
        try:
            return self._data.pack_usd[pack]
        except KeyError:
            raise UnsupportedOptionError(
                f"price table {self.version} has no list price for {pack.value} units"
            ) from None

    def canonical_model(self, name: str, product: str | None = None) -> str:
        """Resolve an alias or spelling (``"Kling-V2.6 "``) to the canonical model name (``"kling-v2-6"``).

        Raises:
            UnknownModelError: not priced (for ``product``); the message names the accepted models.
            UnsupportedOptionError: ``product`` is not a known product.
        """
        if not isinstance(name, str):
            raise UnknownModelError(f"model must be a string, got {type(name).__name__}")
        key = normalise_name(name)
        if product is not None:
            prod = self._product(product)
            hit = self._resolve.get((prod, key))
            if hit is None:
                raise UnknownModelError(self._unknown_model(name, prod))
            return hit
        targets = set(self._resolve_any.get(key, {}).values())
        if len(targets) == 1:
            return targets.pop()
        if targets:
            where = ", ".join(f"{t} ({p})" for p, t in self._resolve_any[key].items())
            raise UnknownModelError(f"model {name!r} is ambiguous: {where}; give a product")
        raise UnknownModelError(f"unknown model {name!r}; accepted: {', '.join(self.models())}")

    def _unknown_model(self, name: str, product: str) -> str:
        models = self._models[product]
        if product == "effects":
            priced = ", ".join(models) if models else "none"
            hint = (
                ""
                if models
                else " (Kling prices effects per template; add [[prices]] rows with"
                ' product = "effects" to your own price file)'
            )
            return f"video effect {name!r} is not priced in price table {self.version}; priced effects: {priced}{hint}"
        if not models:
            return f"unknown model {name!r}; no model is priced for {product} in price table {self.version}"
        message = f"unknown model {name!r}; accepted for {product}: {', '.join(models)}"
        elsewhere = self._resolve_any.get(normalise_name(name))
        if elsewhere:
            message += f" ({name!r} is priced for {', '.join(elsewhere)})"
        return message

    def _product(self, product: str) -> str:
        name = normalise_name(product) if isinstance(product, str) else product
        if name not in self._data.products:
            raise UnsupportedOptionError(f"unknown product {product!r}; accepted: {', '.join(self._data.products)}")
        return name

    # --- quoting ------------------------------------------------------------------------------------

    def quote(
        self,
        model: str,
        *,
        product: str = "video",
        mode: str | None = None,
        duration: int | str | Decimal | None = None,
        resolution: str | None = None,
        sound: bool | str = False,
        voice_control: bool = False,
        video_input: bool = False,
        n: int = 1,
        image_input: bool = False,
    ) -> Quote:
        """Price one request exactly.

        Args:
            model: model name or alias (case-insensitive); for effects the ``effect_scene``.
            product: what is generated; see :meth:`products`.
            mode: ``"std"``/``"pro"``; for models priced by resolution std means 720p, pro 1080p.
            duration: seconds as ``5``, ``"5"`` or ``Decimal("5.04")``; non-integer seconds are rounded
                up to whole seconds. ``None`` applies Kling's default (5 s for video) or, for products
                whose length follows an input (lip-sync, avatar, motion control), the longest accepted
                input, said so in the breakdown.
            resolution: ``"720p"``, ``"1080p"``, ``"4k"``, ``"1k"``, ``"2k"``.
            sound: ``True``/``"on"``/``"native"`` for generated audio, ``False``/``"off"`` for none.
            voice_control: the request names voices (``voice_list``).
            video_input: a reference/edit video is given (omni models).
            n: number of output images, for per-image products (1-9).
            image_input: a reference image is given (image-to-image pricing).

        Returns:
            A :class:`~kling_budget.types.Quote` with exact milli-units, list USD and a breakdown.

        Raises:
            UnknownModelError: the model is not priced for the product.
            UnsupportedOptionError: a mode, duration, resolution, feature, product or ``n`` that is not
                priced; the one-line message names the accepted values.
        """
        return self._quote(
            model, product, mode, duration, resolution, sound, voice_control, video_input, n, image_input
        )

    def _quote(
        self,
        model: str,
        product: str,
        mode: str | None,
        duration: int | str | Decimal | None,
        resolution: str | None,
        sound: bool | str,
        voice_control: bool,
        video_input: bool,
        n: int,
        image_input: bool,
        *,
        length_from_input: bool = False,
        assumed_note: str | None = None,
    ) -> Quote:
        """:meth:`quote` plus request-mapping controls used by :func:`quote_kling_request`.

        ``length_from_input`` prices the longest accepted input when ``duration`` is ``None`` even if the
        product has a default duration; ``assumed_note`` marks a given ``duration`` as an assumption.
        """
        prod = self._product(product)
        group = self._groups.get((prod, self.canonical_model(model, prod)))
        if group is None:  # a product declared without rows has no models, so canonical_model raised
            raise UnknownModelError(self._unknown_model(model, prod))
        axis_value, mode_out, axis_defaulted = self._axis_value(group, mode, resolution)
        key: _Key = (
            axis_value,
            _sound(sound),
            _flag(voice_control, "voice_control"),
            _flag(video_input, "video_input"),
            _flag(image_input, "image_input"),
        )
        rows = group.rows.get(key)
        if rows is None:
            raise UnsupportedOptionError(_explain(group, key, axis_defaulted))
        if isinstance(n, bool) or not isinstance(n, int):
            raise UnsupportedOptionError(f"n must be an integer number of images, got {n!r}")

        params: dict[str, str | int | bool] = {}
        if mode_out is not None:
            params["mode"] = mode_out
        if group.axis == "resolution":
            params["resolution"] = axis_value
        params.update(sound=key[1], voice_control=key[2], video_input=key[3], image_input=key[4], n=n)
        notes: list[str] = []
        row = rows[0]
        if row.per in ("second", "clip", "block"):
            if n != 1:
                raise UnsupportedOptionError(f"n applies only to per-image products; {group.subject} got n={n}")
            suffix = ""
            if duration is None:
                if group.default_duration is not None and not length_from_input:
                    duration, suffix = group.default_duration, " (default duration)"
                elif group.max_input_duration is not None:
                    duration = group.max_input_duration
                    assumed_note = assumed_note or (
                        "length follows an input that is not in the request: "
                        f"priced the longest accepted input, {duration} s"
                    )
                else:
                    raise UnsupportedOptionError(f"{group.subject} is priced by length; give a duration in seconds")
            seconds, exact = _seconds(duration)
            for candidate in rows:
                if candidate.accepts_seconds(seconds):
                    row = candidate
                    break
            else:
                accepted = ", ".join(dict.fromkeys(r.durations_text() for r in rows))
                raise UnsupportedOptionError(f"{row.label} is priced for durations {accepted} s; got {duration!s}")
            if exact != seconds:
                suffix = "" if row.per == "block" else f" ({exact} s rounded up)"
                params["duration_requested"] = str(exact)
            params["duration"] = seconds
            per = row.per
            if per == "second":
                units = row.units_milli * seconds
                label = f"{row.label}: {row.units_text} U/s × {seconds} s{suffix}"
            elif per == "clip":
                units = row.units_milli
                label = f"{row.label}: {row.units_text} U per {seconds} s clip{suffix}"
            else:
                size = row.block_seconds or 1
                if isinstance(exact, int):
                    blocks = -(-exact // size)
                else:
                    blocks = int((exact / size).to_integral_value(rounding=ROUND_CEILING))
                units = row.units_milli * blocks
                label = f"{row.label}: {row.units_text} U per started {size} s × {blocks} ({exact} s{suffix})"
            if assumed_note:
                notes.append(assumed_note)
                params["duration_assumed"] = True
        elif row.per == "image":
            if not 1 <= n <= row.max_n:
                accepted = "1" if row.max_n == 1 else f"1-{row.max_n}"
                raise UnsupportedOptionError(f"{group.subject} is priced for n {accepted} images; got n={n}")
            units = row.units_milli * n
            label = f"{row.label}: {row.units_text} U/image × {n} image{'s' if n != 1 else ''}"
        else:
            if n != 1:
                raise UnsupportedOptionError(f"n applies only to per-image products; {group.subject} got n={n}")
            units = row.units_milli
            label = f"{row.label}: {row.units_text} U per call"

        breakdown = (QuoteLine(label, units), *(QuoteLine(note, 0) for note in notes))
        return Quote(
            product=group.product,
            model=group.model,
            pack_type=group.pack_type,
            units_milli=units,
            list_usd_nano=usd_nano_for_units(units, group.pack_nano, _MILLI),
            breakdown=breakdown,
            params=params,
            price_version=self.version,
            source=row.source,
            effective=row.effective,
            price_overlay=row.overlay,
        )

    def _axis_value(self, group: _Group, mode: str | None, resolution: str | None) -> tuple[str, str | None, bool]:
        """(mode or resolution value to look up, mode to report, whether a default was applied)."""
        m = _option(mode, "mode")
        r = _option(resolution, "resolution")
        values = ", ".join(group.axis_values)
        if group.axis == "":
            if m is not None or r is not None:
                what, got = ("mode", mode) if m is not None else ("resolution", resolution)
                raise UnsupportedOptionError(f"{group.subject} is not priced by {what}; got {what} {got!r}")
            return "", None, False
        if group.axis == "mode":
            if r is not None:
                implied = self._resolution_mode.get(r)
                if implied not in group.axis_values:
                    raise UnsupportedOptionError(
                        f"{group.subject} is priced by mode ({values}); resolution {resolution!r} maps to none of them"
                    )
                if m is not None and m != implied:
                    raise UnsupportedOptionError(f"mode {mode!r} contradicts resolution {resolution!r} ({implied})")
                m = implied
            if m is None:
                if group.default_axis is None:
                    raise UnsupportedOptionError(f"{group.subject} needs a mode: {values}")
                return group.default_axis, group.default_axis, True
            if m not in group.axis_values:
                raise UnsupportedOptionError(f"{group.subject} is priced for modes {values}; got {mode!r}")
            return m, m, False
        if m is not None:
            implied = self._data.mode_resolution.get(m)
            if implied is None or implied not in group.axis_values:
                modes = ", ".join(k for k, v in self._data.mode_resolution.items() if v in group.axis_values)
                raise UnsupportedOptionError(
                    f"{group.subject} is priced for resolutions {values} (modes {modes}); got mode {mode!r}"
                )
            if r is not None and r != implied:
                raise UnsupportedOptionError(f"mode {mode!r} ({implied}) contradicts resolution {resolution!r}")
            return implied, m, False
        if r is None:
            if group.default_axis is None:
                raise UnsupportedOptionError(f"{group.subject} needs a resolution: {values}")
            return group.default_axis, None, True
        if r not in group.axis_values:
            raise UnsupportedOptionError(f"{group.subject} is priced for resolutions {values}; got {resolution!r}")
        return r, None, False

    def __repr__(self) -> str:
        shown = "" if self.overlay is None else f", overlay={self.overlay!r}"
        return f"PriceTable(version={self.version!r}, path={self.path!r}{shown})"


@functools.cache
def _packaged() -> PriceTable:
    text = (resources.files("kling_budget") / "prices" / PACKAGED_FILE).read_text(encoding="utf-8")
    return PriceTable(parse_table(text, f"<packaged>/{PACKAGED_FILE}"), "<packaged>")


def _read(name: str, what: str) -> str:
    try:
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PriceTableError(f"{name}: no such {what}") from None
    except UnicodeDecodeError:
        raise PriceTableError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise PriceTableError(f"{name}: cannot read {what}: {exc.strerror or exc}") from None


def _first(values: Iterable[_T | None]) -> _T | None:
    return next((value for value in values if value is not None), None)


def _option(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnsupportedOptionError(f"{what} must be a string, got {type(value).__name__}")
    return normalise_name(value) or None


def _flag(value: bool, what: str) -> bool:
    if not isinstance(value, bool):
        raise UnsupportedOptionError(f"{what} must be true or false, got {value!r}")
    return value


def _sound(value: bool | str) -> str:
    if value is True:
        return "native"
    if value is False or value is None:
        return "off"
    if isinstance(value, str):
        found = _SOUND_IN.get(normalise_name(value))
        if found:
            return found
    raise UnsupportedOptionError(f"sound must be true, false, 'on', 'off' or 'native'; got {value!r}")


def _seconds(value: int | str | Decimal) -> tuple[int, int | Decimal]:
    """(whole seconds, rounded up; the exact duration) from 5, "5", "5.04" or Decimal("5.04").

    The value is checked as a short plain decimal before any conversion, so ``"1e1000000"`` is refused at
    once instead of building a million-digit integer.
    """
    if isinstance(value, float):
        raise UnsupportedOptionError(
            f"duration must be an int, a string like '5' or a Decimal (never a float), got {type(value).__name__}"
        )
    try:
        parsed = plain_decimal(value, "duration", integer_digits=_DURATION_DIGITS, fraction_digits=_DURATION_DIGITS)
    except InvalidInputError as exc:
        raise UnsupportedOptionError(str(exc)) from None
    exact: int | Decimal = int(parsed) if parsed == parsed.to_integral_value() else parsed
    if exact <= 0:
        raise UnsupportedOptionError(f"duration must be positive, got {shown(value)}")
    if isinstance(exact, int):
        return exact, exact
    return int(exact.to_integral_value(rounding=ROUND_CEILING)), exact.normalize()


def _on(key: _Key) -> tuple[bool, bool, bool, bool]:
    return (key[1] == "native", key[2], key[3], key[4])


def _describe(key: _Key) -> str:
    parts = [key[0]] if key[0] else []
    parts += [text for on, text in zip(_on(key), _FEATURES, strict=True) if on]
    return " + ".join(parts) or "no extras"


def _explain(group: _Group, key: _Key, axis_defaulted: bool) -> str:
    """One line saying why no row matches ``key`` and what is priced instead."""
    keys = list(group.rows)
    wanted = _on(key)
    for index, feature in enumerate(_FEATURES):
        if wanted[index] not in {_on(k)[index] for k in keys}:
            return f"{group.subject} is not priced {'with' if wanted[index] else 'without'} {feature}"
    same_features = [k[0] for k in keys if _on(k) == wanted]
    if same_features:
        features = [text for on, text in zip(wanted, _FEATURES, strict=True) if on]
        with_text = f" with {' + '.join(features)}" if features else ""
        got = key[0] + (" (the default)" if axis_defaulted else "")
        return f"{group.subject}{with_text} is priced only for {group.axis} {', '.join(same_features)}; got {got}"
    # The features clash with each other: name one feature whose flip would make the others priced.
    for index, feature in enumerate(_FEATURES):
        others = [i for i in range(len(_FEATURES)) if i != index]
        if any(all(_on(k)[i] == wanted[i] for i in others) for k in keys):
            kept = [_FEATURES[i] for i in others if wanted[i]]
            with_text = f" with {' + '.join(kept)}" if kept else ""
            needed = "with" if not wanted[index] else "without"
            return f"{group.subject}{with_text} is priced only {needed} {feature}"
    priced = "; ".join(_describe(k) for k in keys)
    return f"{group.subject} is not priced for {_describe(key)}; priced variants: {priced}"
