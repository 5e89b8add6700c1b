"""Parse and validate a price-table TOML document into plain, immutable rows.

This is the only place that knows the file format (documented in ``docs/pricing.md``). Every problem
is reported as a one-line :class:`~kling_budget.errors.PriceTableError` naming the file, the entry and
what is wrong. Floats are refused everywhere: amounts must be strings (``"0.14"``) or integers.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

from kling_budget.errors import InvalidInputError, PriceTableError
from kling_budget.money import parse_decimal, units_to_milli, usd_to_nano
from kling_budget.types import PackType

__all__ = ["PER_KINDS", "PriceRow", "ProductInfo", "TableData", "parse_table"]

PER_KINDS = ("second", "clip", "block", "call", "image")
_DURATION_PER = frozenset({"second", "clip", "block"})
_SOUNDS = {"off": "off", "native": "native", "on": "native"}
_DEFAULT_MODE_RESOLUTION = {"std": "720p", "pro": "1080p"}
_DEFAULT_MAX_N = 9

_TOP_KEYS = frozenset(
    {"version", "currency", "description", "effective", "pack_types", "mode_resolution", "products"}
    | {"aliases", "prices"}
)
_PRODUCT_KEYS = frozenset({"pack_type", "default_mode", "default_duration", "default_resolution", "description"})
_ROW_KEYS = frozenset(
    {"product", "model", "mode", "resolution", "units", "units_by_mode", "units_by_resolution"}
    | {"sound", "voice_control", "video_input", "image_input", "per", "durations", "min_duration"}
    | {"max_duration", "block_seconds", "max_n", "max_input_duration", "default_duration"}
    | {"default_mode", "default_resolution", "source", "effective", "note"}
)


class _FloatLiteral(str):
    """A TOML float kept as its source text, so the loader can refuse it with a precise message."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One priced variant, expanded from a ``[[prices]]`` entry of a price file.

    Attributes:
        product: the product (``"video"``, ``"image"``, ``"lip-sync"`` ...).
        model: canonical model name (for effects: the ``effect_scene``).
        mode: ``"std"``/``"pro"`` when priced by mode, else ``""``.
        resolution: ``"720p"``/``"1080p"``/``"4k"``/``"1k"``/``"2k"`` when priced by resolution, else ``""``.
        sound: ``"off"`` or ``"native"`` (generated audio).
        voice_control, video_input, image_input: the other priced request features.
        per: ``"second"``, ``"clip"``, ``"block"`` (per started ``block_seconds``), ``"call"`` or ``"image"``.
        units_milli: price per ``per`` in milli-units; ``units_text`` is the amount as written in the file.
        durations: the accepted durations in seconds, when listed; else ``min_duration``..``max_duration``.
        max_n: most output images per request (``per = "image"``).
        max_input_duration: seconds priced when the output length follows an input the request does not
            measure (lip-sync video, avatar audio, motion reference, omni edit video).
        default_duration, default_mode, default_resolution: per-row overrides of the product defaults.
        source, effective, note: provenance; ``entry`` is the 1-based ``[[prices]]`` index in the file.
        label: human description used in quote breakdowns, e.g. ``"kling-v2-6 pro + native audio"``.
        overlay: the price overlay the row comes from (``"<version> (<file>)"``), ``""`` for the table's own.
    """

    product: str
    model: str
    mode: str
    resolution: str
    sound: str
    voice_control: bool
    video_input: bool
    image_input: bool
    per: str
    units_milli: int
    units_text: str
    durations: tuple[int, ...]
    min_duration: int | None
    max_duration: int | None
    block_seconds: int | None
    max_n: int
    max_input_duration: int | None
    default_duration: int | None
    default_mode: str | None
    default_resolution: str | None
    source: str
    effective: str
    note: str
    entry: int
    label: str
    overlay: str = ""

    @property
    def axis(self) -> str:
        """``"mode"``, ``"resolution"`` or ``""``: what the row's price is keyed by besides features."""
        return "mode" if self.mode else "resolution" if self.resolution else ""

    @property
    def axis_value(self) -> str:
        """The mode or resolution value of the row (``""`` when neither)."""
        return self.mode or self.resolution

    @property
    def key(self) -> tuple[str, str, bool, bool, bool]:
        """The lookup key: (axis value, sound, voice_control, video_input, image_input)."""
        return (self.axis_value, self.sound, self.voice_control, self.video_input, self.image_input)

    def accepts_seconds(self, seconds: int) -> bool:
        """Whether a duration of ``seconds`` (already whole) is priced by this row."""
        if self.durations:
            return seconds in self.durations
        if self.min_duration is not None and seconds < self.min_duration:
            return False
        return not (self.max_duration is not None and seconds > self.max_duration)

    def durations_text(self) -> str:
        """The accepted durations for messages: ``"5, 10"``, ``"3-15"``, ``"up to 60"`` or ``"any"``."""
        if self.durations:
            return ", ".join(str(d) for d in self.durations)
        if self.min_duration is not None and self.max_duration is not None:
            return f"{self.min_duration}-{self.max_duration}"
        if self.max_duration is not None:
            return f"up to {self.max_duration}"
        if self.min_duration is not None:
            return f"at least {self.min_duration}"
        return "any"


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """A product declared in ``[products.<name>]``: its pack type and Kling's defaults."""

    name: str
    pack_type: PackType
    default_mode: str | None
    default_duration: int | None
    default_resolution: str | None
    description: str


@dataclass(frozen=True, slots=True)
class TableData:
    """Everything a valid price file says, checked and normalised."""

    version: str
    currency: str
    description: str
    pack_usd: Mapping[PackType, Decimal]
    pack_nano: Mapping[PackType, int]
    mode_resolution: Mapping[str, str]
    products: Mapping[str, ProductInfo]
    aliases: Mapping[str, Mapping[str, str]]
    rows: tuple[PriceRow, ...]


def normalise_name(name: str) -> str:
    """Model, product and option names compare case-insensitively, ignoring surrounding whitespace."""
    return name.strip().lower()


class _Where:
    """Builds the one-line error messages: ``<file>: <location>: <problem>``."""

    __slots__ = ("file",)

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, location: str, problem: str) -> NoReturn:
        where = f"{self.file}: {location}: " if location else f"{self.file}: "
        raise PriceTableError(where + problem)


def parse_table(text: str, file: str) -> TableData:
    """Parse price-table TOML ``text``; ``file`` names it in error messages.

    Raises:
        PriceTableError: on any syntax, type or consistency problem (one line, naming the entry).
    """
    where = _Where(file)
    doc = load_document(text, where)
    version = _req_str(doc, "version", "top level", where)
    currency = _req_str(doc, "currency", "top level", where)
    if currency != "USD":
        where.fail("top level", f'currency must be "USD" (list prices are in US dollars), got {currency!r}')
    description = _opt_str(doc, "description", "top level", where) or ""
    default_effective = _opt_date(doc, "effective", "top level", where)

    pack_usd, pack_nano = _parse_packs(doc, where)
    mode_resolution = _parse_mode_resolution(doc, where)
    products = _parse_products(doc, pack_usd, where)

    raw_rows = doc.get("prices")
    if not isinstance(raw_rows, list) or not raw_rows:
        where.fail("top level", "needs at least one [[prices]] entry")
    rows: list[PriceRow] = []
    for index, entry in enumerate(raw_rows, start=1):
        if not isinstance(entry, dict):
            where.fail(f"[[prices]] entry {index}", "must be a table")
        rows.extend(_expand_entry(entry, index, products, default_effective, where))
    _check_rows(rows, where)
    aliases = _parse_aliases(doc, products, rows, where)
    return TableData(
        version=version,
        currency=currency,
        description=description,
        pack_usd=pack_usd,
        pack_nano=pack_nano,
        mode_resolution=mode_resolution,
        products=products,
        aliases=aliases,
        rows=tuple(rows),
    )


def load_document(text: str, where: _Where) -> dict[str, Any]:
    """The TOML document of a price file or overlay, floats refused and top-level keys checked."""
    try:
        doc = tomllib.loads(text, parse_float=_FloatLiteral)
    except tomllib.TOMLDecodeError as exc:
        where.fail("", f"not valid TOML: {exc}")
    _refuse_floats(doc, where)
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        where.fail("", f"unknown top-level key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(_TOP_KEYS))}")
    return doc


# --- floats -------------------------------------------------------------------------------------------


def _refuse_floats(doc: Mapping[str, Any], where: _Where) -> None:
    for key, value in doc.items():
        if key == "prices" and isinstance(value, list):
            for index, entry in enumerate(value, start=1):
                found = _find_float(entry, "")
                if found:
                    _float_error(_entry_location(entry, index), found, where)
            continue
        found = _find_float(value, key)
        if found:
            _float_error("", found, where)


def _find_float(value: object, path: str) -> tuple[str, str] | None:
    if isinstance(value, _FloatLiteral):
        return path, str(value)
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_float(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_float(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _float_error(location: str, found: tuple[str, str], where: _Where) -> NoReturn:
    path, text = found
    where.fail(
        location,
        f"{path} = {text} is a float; price files allow no floats, "
        f'write amounts as strings ("{text}") and counts as integers',
    )


# --- scalar helpers -----------------------------------------------------------------------------------


def _entry_location(entry: object, index: int) -> str:
    if isinstance(entry, dict):
        product, model = entry.get("product"), entry.get("model")
        if isinstance(model, list) and model:
            model = model[0]
        if isinstance(product, str) and isinstance(model, str):
            return f"[[prices]] entry {index} ({product} {model})"
    return f"[[prices]] entry {index}"


def _req_str(table: Mapping[str, Any], key: str, location: str, where: _Where) -> str:
    value = _opt_str(table, key, location, where)
    if value is None:
        where.fail(location, f"{key} is required (a non-empty string)")
    return value


def _opt_str(table: Mapping[str, Any], key: str, location: str, where: _Where) -> str | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        where.fail(location, f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _opt_int(table: Mapping[str, Any], key: str, location: str, where: _Where) -> int | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        where.fail(location, f"{key} must be a positive integer, got {value!r}")
    return value


def _opt_date(table: Mapping[str, Any], key: str, location: str, where: _Where) -> str | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    where.fail(location, f"{key} must be a date like 2026-11-27, got {value!r}")


def _amount_milli(value: object, what: str, location: str, where: _Where) -> tuple[int, str]:
    if isinstance(value, bool) or not isinstance(value, str | int):
        where.fail(location, f'{what} must be a string like "0.5" or an integer, got {value!r}')
    try:
        milli = units_to_milli(value, what)
    except InvalidInputError as exc:
        where.fail(location, str(exc))
    if milli < 0:
        where.fail(location, f"{what} must not be negative, got {value!r}")
    return milli, str(parse_decimal(value, what))


def _names(value: object, key: str, location: str, where: _Where) -> list[str]:
    items = value if isinstance(value, list) else [value]
    texts = [item for item in items if isinstance(item, str) and item.strip()]
    if not items or len(texts) != len(items):
        where.fail(location, f"{key} must be a non-empty string or a list of them, got {value!r}")
    names = [normalise_name(item) for item in texts]
    if len(set(names)) != len(names):
        where.fail(location, f"{key} lists a value twice: {value!r}")
    return names


def _flags(table: Mapping[str, Any], key: str, location: str, where: _Where) -> list[bool]:
    value = table.get(key, False)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, bool) for item in items) or len(set(items)) != len(items):
        where.fail(location, f"{key} must be true, false or [false, true], got {value!r}")
    return list(items)


# --- top-level sections -------------------------------------------------------------------------------


def _parse_packs(doc: Mapping[str, Any], where: _Where) -> tuple[dict[PackType, Decimal], dict[PackType, int]]:
    packs = doc.get("pack_types")
    if not isinstance(packs, dict) or not packs:
        where.fail("top level", 'needs a [pack_types] table: list USD per unit, e.g. video = "0.14"')
    accepted = ", ".join(p.value for p in PackType)
    usd: dict[PackType, Decimal] = {}
    nano: dict[PackType, int] = {}
    for name, value in packs.items():
        try:
            pack = PackType(name)
        except ValueError:
            where.fail("[pack_types]", f"unknown pack type {name!r}; accepted: {accepted}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            where.fail("[pack_types]", f'{name} must be a string like "0.14" or an integer, got {value!r}')
        try:
            usd[pack] = parse_decimal(value, f"pack_types.{name}")
            nano[pack] = usd_to_nano(value, f"pack_types.{name}")
        except InvalidInputError as exc:
            where.fail("[pack_types]", str(exc))
        if nano[pack] <= 0:
            where.fail("[pack_types]", f"{name} must be a positive price, got {value!r}")
    return usd, nano


def _parse_mode_resolution(doc: Mapping[str, Any], where: _Where) -> dict[str, str]:
    table = doc.get("mode_resolution")
    if table is None:
        return dict(_DEFAULT_MODE_RESOLUTION)
    if not isinstance(table, dict):
        where.fail("[mode_resolution]", 'must be a table like std = "720p"')
    result: dict[str, str] = {}
    for mode, resolution in table.items():
        if not isinstance(resolution, str) or not resolution.strip():
            where.fail("[mode_resolution]", f"{mode} must name a resolution, got {resolution!r}")
        result[normalise_name(mode)] = normalise_name(resolution)
    return result


def _parse_products(
    doc: Mapping[str, Any], pack_usd: Mapping[PackType, Decimal], where: _Where
) -> dict[str, ProductInfo]:
    table = doc.get("products")
    if not isinstance(table, dict) or not table:
        where.fail("top level", "needs [products.<name>] tables, each with a pack_type")
    products: dict[str, ProductInfo] = {}
    for raw_name, spec in table.items():
        name = normalise_name(raw_name)
        location = f"[products.{raw_name}]"
        if not isinstance(spec, dict):
            where.fail(location, "must be a table")
        unknown = sorted(set(spec) - _PRODUCT_KEYS)
        if unknown:
            where.fail(location, f"unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(_PRODUCT_KEYS))}")
        pack_name = _req_str(spec, "pack_type", location, where)
        try:
            pack = PackType(pack_name)
        except ValueError:
            where.fail(location, f"unknown pack_type {pack_name!r}; accepted: {', '.join(p.value for p in PackType)}")
        if pack not in pack_usd:
            where.fail(location, f"pack_type {pack.value!r} has no list price in [pack_types]")
        mode = _opt_str(spec, "default_mode", location, where)
        resolution = _opt_str(spec, "default_resolution", location, where)
        products[name] = ProductInfo(
            name=name,
            pack_type=pack,
            default_mode=normalise_name(mode) if mode else None,
            default_duration=_opt_int(spec, "default_duration", location, where),
            default_resolution=normalise_name(resolution) if resolution else None,
            description=_opt_str(spec, "description", location, where) or "",
        )
    return products


# --- [[prices]] entries -------------------------------------------------------------------------------


def _expand_entry(
    entry: Mapping[str, Any],
    index: int,
    products: Mapping[str, ProductInfo],
    default_effective: str | None,
    where: _Where,
) -> list[PriceRow]:
    location = _entry_location(entry, index)
    unknown = sorted(set(entry) - _ROW_KEYS)
    if unknown:
        where.fail(location, f"unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(_ROW_KEYS))}")

    product = normalise_name(_req_str(entry, "product", location, where))
    if product not in products:
        where.fail(location, f"product {product!r} is not declared; declared: {', '.join(products)}")
    if "model" not in entry:
        where.fail(location, "model is required (a name or a list of names)")
    models = _names(entry["model"], "model", location, where)

    per = _req_str(entry, "per", location, where)
    if per not in PER_KINDS:
        where.fail(location, f"per must be one of {', '.join(PER_KINDS)}, got {per!r}")
    axis_prices = _axis_prices(entry, location, where)

    sounds: list[str] = []
    for value in _names(entry.get("sound", "off"), "sound", location, where):
        if value not in _SOUNDS:
            where.fail(location, f'sound must be "off" or "native" (or a list of them), got {value!r}')
        sounds.append(_SOUNDS[value])
    voice = _flags(entry, "voice_control", location, where)
    video = _flags(entry, "video_input", location, where)
    image = _flags(entry, "image_input", location, where)

    durations = _durations(entry, location, where)
    min_duration = _opt_int(entry, "min_duration", location, where)
    max_duration = _opt_int(entry, "max_duration", location, where)
    block_seconds = _opt_int(entry, "block_seconds", location, where)
    max_n = _opt_int(entry, "max_n", location, where)
    max_input = _opt_int(entry, "max_input_duration", location, where)
    default_duration = _opt_int(entry, "default_duration", location, where)
    _check_per_fields(per, durations, min_duration, max_duration, block_seconds, max_n, max_input,
                      default_duration, location, where)  # fmt: skip

    default_mode = _opt_str(entry, "default_mode", location, where)
    default_resolution = _opt_str(entry, "default_resolution", location, where)
    source = _req_str(entry, "source", location, where)
    effective = _opt_date(entry, "effective", location, where) or default_effective
    if effective is None:
        where.fail(location, "effective is required (a date like 2026-11-27), here or at the top level")
    note = _opt_str(entry, "note", location, where) or ""

    rows = []
    for model, (axis, axis_value, milli, text), sound, vc, vi, ii in itertools.product(
        models, axis_prices, sounds, voice, video, image
    ):
        rows.append(
            PriceRow(
                product=product,
                model=model,
                mode=axis_value if axis == "mode" else "",
                resolution=axis_value if axis == "resolution" else "",
                sound=sound,
                voice_control=vc,
                video_input=vi,
                image_input=ii,
                per=per,
                units_milli=milli,
                units_text=text,
                durations=durations,
                min_duration=min_duration,
                max_duration=max_duration,
                block_seconds=block_seconds,
                max_n=max_n or (_DEFAULT_MAX_N if per == "image" else 1),
                max_input_duration=max_input,
                default_duration=default_duration,
                default_mode=normalise_name(default_mode) if default_mode else None,
                default_resolution=normalise_name(default_resolution) if default_resolution else None,
                source=source,
                effective=effective,
                note=note,
                entry=index,
                label=_label(product, model, axis_value, sound, vc, vi, ii),
            )
        )
    return rows


def _axis_prices(entry: Mapping[str, Any], location: str, where: _Where) -> list[tuple[str, str, int, str]]:
    """(axis kind, axis value, milli-units, units text) for every mode/resolution the entry prices."""
    given = [key for key in ("units", "units_by_mode", "units_by_resolution") if key in entry]
    if len(given) != 1:
        where.fail(location, "give exactly one of units, units_by_mode, units_by_resolution")
    if given[0] == "units":
        milli, text = _amount_milli(entry["units"], "units", location, where)
        if "mode" in entry and "resolution" in entry:
            where.fail(location, "give mode or resolution, not both")
        for axis in ("mode", "resolution"):
            if axis in entry:
                return [(axis, value, milli, text) for value in _names(entry[axis], axis, location, where)]
        return [("", "", milli, text)]
    key = given[0]
    axis = "mode" if key == "units_by_mode" else "resolution"
    if "mode" in entry or "resolution" in entry:
        where.fail(location, f"{key} already names the {axis}s; remove mode/resolution")
    table = entry[key]
    if not isinstance(table, dict) or not table:
        where.fail(location, f'{key} must be a table like {{ std = "0.4", pro = "0.7" }}')
    result = []
    for value, amount in table.items():
        milli, text = _amount_milli(amount, f"{key}.{value}", location, where)
        result.append((axis, normalise_name(value), milli, text))
    return result


def _durations(entry: Mapping[str, Any], location: str, where: _Where) -> tuple[int, ...]:
    if "durations" not in entry:
        return ()
    value = entry["durations"]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
        or len(set(value)) != len(value)
    ):
        where.fail(location, f"durations must be a list of distinct positive integers (seconds), got {value!r}")
    return tuple(sorted(value))


def _check_per_fields(
    per: str,
    durations: Sequence[int],
    min_duration: int | None,
    max_duration: int | None,
    block_seconds: int | None,
    max_n: int | None,
    max_input: int | None,
    default_duration: int | None,
    location: str,
    where: _Where,
) -> None:
    has_range = min_duration is not None or max_duration is not None
    if per in _DURATION_PER:
        if durations and has_range:
            where.fail(location, "give durations or min_duration/max_duration, not both")
        if per != "block" and not durations and (min_duration is None or max_duration is None):
            where.fail(location, f'per = "{per}" needs durations = [...] or both min_duration and max_duration')
        if min_duration is not None and max_duration is not None and min_duration > max_duration:
            where.fail(location, f"min_duration {min_duration} is above max_duration {max_duration}")
    elif durations or has_range or max_input is not None or default_duration is not None:
        where.fail(location, f'per = "{per}" takes no durations (it is not priced by length)')
    if (per == "block") != (block_seconds is not None):
        where.fail(location, 'block_seconds is required with per = "block" and only allowed there')
    if max_n is not None and per != "image":
        where.fail(location, 'max_n is only allowed with per = "image"')


def _label(product: str, model: str, axis_value: str, sound: str, vc: bool, vi: bool, ii: bool) -> str:
    parts = [model]
    if product not in ("video", "image") and model != f"kling-{product}":
        parts.append(product)
    if axis_value:
        parts.append(axis_value)
    label = " ".join(parts)
    for on, text in ((sound == "native", "native audio"), (vc, "voice control"), (vi, "video input")):
        if on:
            label += f" + {text}"
    if ii:
        label += " + image input"
    return label


# --- whole-table consistency --------------------------------------------------------------------------


def _check_rows(rows: Sequence[PriceRow], where: _Where) -> None:
    groups: dict[tuple[str, str], list[PriceRow]] = {}
    for row in rows:
        groups.setdefault((row.product, row.model), []).append(row)
    for (product, model), group in groups.items():
        first = group[0]
        for row in group[1:]:
            if row.axis != first.axis:
                where.fail(
                    f"[[prices]] entry {row.entry} ({product} {model})",
                    f"priced by {row.axis or 'neither mode nor resolution'} but entry {first.entry} "
                    f"prices it by {first.axis or 'neither mode nor resolution'}; use one for a model",
                )
        for attr in ("default_duration", "default_mode", "default_resolution"):
            values = {getattr(r, attr) for r in group if getattr(r, attr) is not None}
            if len(values) > 1:
                where.fail(f"{product} {model}", f"entries disagree on {attr}: {sorted(map(str, values))}")
        _check_overlaps(group, where)


def _check_overlaps(group: Sequence[PriceRow], where: _Where) -> None:
    by_key: dict[tuple[str, str, bool, bool, bool], list[PriceRow]] = {}
    for row in group:
        by_key.setdefault(row.key, []).append(row)
    for same in by_key.values():
        for a, b in itertools.combinations(same, 2):
            if _overlap(a, b):
                where.fail(
                    f"[[prices]] entry {b.entry} ({b.label})",
                    f"duplicates the price of entry {a.entry} for the same variant"
                    + ("" if a.per not in _DURATION_PER else " and duration"),
                )


def _overlap(a: PriceRow, b: PriceRow) -> bool:
    if a.per not in _DURATION_PER or b.per not in _DURATION_PER:
        return True
    low_a, high_a = _span(a)
    low_b, high_b = _span(b)
    if high_a < low_b or high_b < low_a:
        return False
    return any(a.accepts_seconds(s) and b.accepts_seconds(s) for s in range(max(low_a, low_b), min(high_a, high_b) + 1))


def _span(row: PriceRow) -> tuple[int, int]:
    if row.durations:
        return row.durations[0], row.durations[-1]
    # A practical upper bound for an open range: no Kling product accepts inputs anywhere near a day.
    return row.min_duration or 1, row.max_duration or 86_400


def _parse_aliases(
    doc: Mapping[str, Any], products: Mapping[str, ProductInfo], rows: Sequence[PriceRow], where: _Where
) -> dict[str, dict[str, str]]:
    table = doc.get("aliases", {})
    if not isinstance(table, dict):
        where.fail("[aliases]", "must be a table of tables: [aliases.all], [aliases.<product>]")
    models_by_product: dict[str, set[str]] = {}
    for row in rows:
        models_by_product.setdefault(row.product, set()).add(row.model)
    every_model = set().union(*models_by_product.values())
    result: dict[str, dict[str, str]] = {}
    for raw_scope, mapping in table.items():
        scope = normalise_name(raw_scope)
        location = f"[aliases.{raw_scope}]"
        if scope != "all" and scope not in products:
            where.fail(location, f"unknown product {scope!r}; use all or one of: {', '.join(products)}")
        if not isinstance(mapping, dict):
            where.fail(location, 'must be a table like "kling-v1.5" = "kling-v1-5"')
        known = every_model if scope == "all" else models_by_product.get(scope, set())
        scoped: dict[str, str] = {}
        for raw_alias, target in mapping.items():
            alias = normalise_name(raw_alias)
            if not isinstance(target, str) or normalise_name(target) not in known:
                where.fail(location, f"alias {raw_alias!r} points to {target!r}, which is not a priced model here")
            if alias in known:
                where.fail(location, f"alias {raw_alias!r} shadows a priced model of the same name")
            scoped[alias] = normalise_name(target)
        result[scope] = scoped
    return result
