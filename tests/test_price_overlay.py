"""Price overlays: new or corrected models on top of the price table, in the library, the CLI and the gateway."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_budget.errors import PriceTableError, UnknownModelError, UnsupportedOptionError
from kling_budget.ledger import ReservationState
from kling_budget.pricing import PriceTable, quote_kling_request
from kling_budget.simulator import SimulatorConfig, running_simulator
from kling_budget.tracker import CostTracker
from tests.gatewayutil import ADMIN_TOKEN, running_gateway, wait_until
from tests.jobfixtures import run_cli

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "kling-4-overlay.toml"
T2V = "/v1/videos/text2video"
V4_BODY = {"model_name": "kling-v4", "resolution": "1080p", "duration": "5", "prompt": "a fox"}
LABEL = f"kling-4-example-2026-12 ({EXAMPLE})"


def _write(tmp_path: Path, text: str, name: str = "overlay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


ROW = (
    'product = "video"\nper = "second"\nmin_duration = 3\nmax_duration = 15\nsource = "test"\n'
    'effective = "2026-12-01"\n'
)


# ---------------------------------------------------------------------------------------------- library


def test_example_overlay_prices_kling_4_and_its_flash_variant() -> None:
    """The documented example adds kling-v4 (3-30 s, 720p/1080p, audio on) and kling-v4-flash (3-20 s, 720p)."""
    table = PriceTable.default().with_overlay(EXAMPLE)
    quote = table.quote("kling-4.0", resolution="1080p", duration=30)
    assert (quote.model, quote.units_milli, quote.usd) == ("kling-v4", 54_000, Decimal("7.56"))
    assert quote.price_version == "2026-11-27" and quote.price_overlay == LABEL
    assert table.quote("kling-v4", duration=3, sound=True).units_milli == 3600  # 720p by default, audio priced
    assert table.quote("kling-v4-flash", duration=20).units_milli == 14_400
    with pytest.raises(UnsupportedOptionError, match="resolutions 720p"):
        table.quote("kling-v4-flash", resolution="1080p", duration=5)
    with pytest.raises(UnsupportedOptionError, match="durations 3-20"):
        table.quote("kling-v4-flash", duration=21)
    base = table.quote("kling-v2-6", mode="pro", duration=5)
    assert base.units_milli == 2500 and base.price_overlay == ""
    with pytest.raises(UnknownModelError):
        PriceTable.default().quote("kling-v4", duration=5)


def test_overlay_prices_the_2026_design_path_of_a_new_model() -> None:
    """`POST /text-to-video/kling-4.0` (model in the path) is priced by the overlay too."""
    table = PriceTable.default().with_overlay(EXAMPLE)
    body = {"prompt": "a fox", "settings": {"duration": 10, "resolution": "1080p", "audio": "native"}}
    quote = quote_kling_request(table, "/text-to-video/kling-4.0", body)
    assert (quote.model, quote.units_milli, quote.price_overlay) == ("kling-v4", 18_000, LABEL)
    with pytest.raises(UnknownModelError, match=r"unknown model .kling-4\.0."):
        quote_kling_request(PriceTable.default(), "/text-to-video/kling-4.0", body)


def test_overlay_replaces_every_row_of_a_model_it_names_and_keeps_the_table_s_aliases(tmp_path: Path) -> None:
    """A model in the overlay is priced only by the overlay; the table's spellings of it still resolve."""
    path = _write(tmp_path, f'[[prices]]\nmodel = "kling-v2-6"\nunits_by_mode = {{ std = "0.4" }}\n{ROW}')
    table = PriceTable.default().with_overlay(path)
    quote = table.quote("kling-v2.6", mode="std", duration=10)
    assert quote.units_milli == 4000 and quote.price_overlay == f"overlay ({path})"
    with pytest.raises(UnsupportedOptionError, match="modes std"):
        table.quote("kling-v2-6", mode="pro", duration=5)
    assert table.quote("kling-v3", resolution="720p", duration=5).units_milli == 3000  # untouched


def test_overlay_model_named_like_a_table_alias_takes_the_name(tmp_path: Path) -> None:
    """An overlay model whose name was a table alias (kling-3.0 → kling-v3) is priced by the overlay."""
    text = f'version = "x"\n[[prices]]\nmodel = "kling-3.0"\nunits_by_resolution = {{ "720p" = "2" }}\n{ROW}'
    table = PriceTable.default().with_overlay(_write(tmp_path, text))
    assert table.quote("kling-3.0", duration=5).units_milli == 10_000
    assert table.quote("kling-v3", resolution="720p", duration=5).units_milli == 3000


def test_overlay_may_add_a_product_and_change_a_list_price(tmp_path: Path) -> None:
    """[products.*] and [pack_types] in an overlay add to or replace the table's."""
    text = (
        '[pack_types]\ntry_on = "0.08"\n[products.upscale]\npack_type = "video"\n'
        '[[prices]]\nproduct = "upscale"\nmodel = "kling-upscale"\nunits = "0.25"\nper = "call"\n'
        'source = "console"\neffective = "2026-12-01"\n'
    )
    table = PriceTable.default().with_overlay(_write(tmp_path, text))
    assert table.quote("kling-upscale", product="upscale").units_milli == 250
    assert table.list_usd_per_unit("try_on") == Decimal("0.08")
    assert table.list_usd_per_unit("video") == Decimal("0.14")


BAD_OVERLAYS = [
    ("float", f'[[prices]]\nmodel = "m"\nunits = 0.5\n{ROW}', "units = 0.5 is a float"),
    ("unknown key", 'bogus = 1\n[[prices]]\nmodel = "m"\n', "unknown top-level key(s) bogus"),
    ("nothing", 'version = "v"\n', "needs at least one [[prices]] entry"),
    ("undeclared product", '[[prices]]\nproduct = "clips"\nmodel = "m"\nunits = "1"\nper = "call"\n', "'clips'"),
    (
        "overlapping",
        f'[[prices]]\nmodel = "m"\nunits = "1"\n{ROW}[[prices]]\nmodel = "m"\nunits = "2"\n{ROW}',
        "[[prices]] entry 2 (m): duplicates the price of entry 1",
    ),
    ("alias to nothing", '[aliases.all]\n"m2" = "no-such-model"\n', "points to 'no-such-model'"),
    ("bad currency", f'currency = "EUR"\n[[prices]]\nmodel = "m"\nunits = "1"\n{ROW}', 'currency must be "USD"'),
    ("not toml", "[[prices]\n", "not valid TOML"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in BAD_OVERLAYS], ids=[i for i, _, _ in BAD_OVERLAYS]
)
def test_a_bad_overlay_is_one_line_naming_the_file_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    """An invalid overlay raises PriceTableError: one line, the overlay file first, then what is wrong."""
    path = _write(tmp_path, text)
    with pytest.raises(PriceTableError) as raised:
        PriceTable.default().with_overlay(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_missing_overlay_file_and_a_second_overlay_are_refused(tmp_path: Path) -> None:
    """A missing file is named as a missing overlay; an overlaid table takes no second overlay."""
    with pytest.raises(PriceTableError, match="no such price overlay file"):
        PriceTable.default().with_overlay(tmp_path / "nope.toml")
    with pytest.raises(PriceTableError, match="already has the overlay"):
        PriceTable.default().with_overlay(EXAMPLE).with_overlay(EXAMPLE)


def test_tracker_takes_the_overlay_from_the_argument_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CostTracker(prices_overlay=...) and KLING_BUDGET_PRICES_OVERLAY price kling-v4; the hold records the overlay."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with CostTracker(db, prices_overlay=EXAMPLE) as tracker:
        reservation = tracker.reserve("kling-v4", resolution="720p", duration=10, project_id="p")
        assert reservation.units == Decimal("12")
        assert tracker.ledger.get_reservation(reservation.id).detail["price_overlay"] == LABEL
    monkeypatch.setenv("KLING_BUDGET_PRICES_OVERLAY", str(EXAMPLE))
    with CostTracker(db) as tracker:
        assert tracker.prices.overlay == LABEL
    with CostTracker(db, prices=PriceTable.default()) as tracker:  # a ready table is used as given
        assert tracker.prices.overlay is None


# ---------------------------------------------------------------------------------------------- CLI


def test_price_says_which_table_and_which_overlay_priced_the_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`price` text and --json name the table version and the overlay (from the option or the variable)."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = run_cli(capsys, "--db", db, "--prices-overlay", str(EXAMPLE), "price", "-m", "kling-v4", "-d", "10")
    code, out = result.code, result.out
    assert code == 0 and "12 units = $1.68" in out
    assert f"(price table 2026-11-27, overlay {LABEL})" in " ".join(out.split())
    monkeypatch.setenv("KLING_BUDGET_PRICES_OVERLAY", str(EXAMPLE))
    result = run_cli(capsys, "--db", db, "price", "-m", "kling-v4-flash", "-d", "5", "--json")
    code, out = result.code, result.out
    shown = json.loads(out)
    assert code == 0 and shown["units"] == "3.6" and shown["price_version"] == "2026-11-27"
    assert shown["price_overlay"] == LABEL
    assert shown["price_table"] == {"version": "2026-11-27", "path": "<packaged>", "overlay": LABEL}
    result = run_cli(capsys, "--db", db, "price", "-m", "kling-v2-6", "-d", "5", "--json")
    code, out = result.code, result.out
    assert code == 0 and json.loads(out)["price_overlay"] is None  # the table priced this one
    result = run_cli(capsys, "--db", db, "price", "--list", "--json")
    code, out = result.code, result.out
    assert json.loads(out)["price_overlay"] == LABEL and "kling-v4" in json.loads(out)["products"]["video"]


def test_price_of_an_unknown_model_and_a_bad_overlay_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An unknown model names the overlay option; a bad overlay file is exit 2 with one line naming it."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = run_cli(capsys, "--db", db, "price", "-m", "kling-v4", "-d", "5")
    code, err = result.code, result.err
    assert code == 2 and "unknown model 'kling-v4'" in err and "--prices-overlay" in err
    bad = _write(tmp_path, 'version = "v"\n')
    result = run_cli(capsys, "--db", db, "--prices-overlay", str(bad), "price", "-m", "kling-v2-6")
    code, err = result.code, result.err
    assert code == 2 and err.count("\n") == 1 and f"{bad}: top level: an overlay needs" in err


def test_serve_with_a_bad_overlay_stops_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --prices-overlay` validates the file before listening: a bad one is exit 2, one line."""
    monkeypatch.setenv("KLING_API_KEY", "real-key-not-used")
    bad = _write(tmp_path, '[[prices]]\nmodel = "m"\nunits = 1.5\n')
    db = f"sqlite:///{tmp_path / 'x.db'}"
    serve = ["serve", "--init", "--port", "0", "--log-level", "error"]
    result = run_cli(capsys, "--db", db, "--prices-overlay", str(bad), *serve)
    code, err = result.code, result.err
    assert code == 2 and "units = 1.5 is a float" in err and err.strip().count("\n") == 0


# ---------------------------------------------------------------------------------------------- gateway


@pytest.fixture
def kling4() -> Iterator[Any]:
    """A simulator that charges Kling 4.0 at the example overlay's prices."""
    table = PriceTable.default().with_overlay(EXAMPLE)
    config = SimulatorConfig.single(concurrency=100, queued_seconds=0.05, running_seconds=0.1)
    config = dataclasses.replace(config, extra_models=("kling-v4", "kling-v4-flash"))
    with running_simulator(config, pricer=lambda path, body: quote_kling_request(table, path, body)) as sim:
        yield sim


def test_gateway_with_an_overlay_prices_reserves_forwards_and_settles_kling_4(
    kling4: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """serve with the overlay: a kling-v4 create is held at the overlay's price, sent, and settled at Kling's."""
    with running_gateway(kling4, sqlite_url, tmp_path / "home", prices_overlay=str(EXAMPLE)) as gw:
        issued = gw.state.keys.create("app", project="p", kind="api")
        with gw.client(f"Bearer {issued.api_key}") as client:
            created = client.post(T2V, json=V4_BODY)
            assert created.status_code == 200, created.text
            task_id = created.json()["data"]["task_id"]
            info = gw.state.ledger.find_by_task(task_id)
            assert info.units_milli == 9000 and info.detail["price_overlay"] == LABEL

            def settled() -> Any:
                client.get(f"{T2V}/{task_id}")
                found = gw.state.ledger.find_by_task(task_id)
                return found if found.state is ReservationState.COMMITTED else None

            assert wait_until(settled).actual_milli == 9000
            quote = client.post(
                "/admin/api/quote",
                json={"model": "kling-v4", "resolution": "1080p", "duration": 5},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ).json()
            prices = client.get("/admin/api/prices", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert quote["units"] == "9" and quote["price_overlay"] == LABEL
    assert prices["overlay"] == LABEL


def test_gateway_without_the_overlay_refuses_kling_4_with_400_naming_the_option(
    kling4: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """An unpriceable model is 400/1201 naming --prices-overlay; nothing is held and nothing reaches Kling."""
    with running_gateway(kling4, sqlite_url, tmp_path / "home") as gw:
        issued = gw.state.keys.create("app", project="p", kind="api")
        with gw.client(f"Bearer {issued.api_key}") as client:
            refused = client.post(T2V, json=V4_BODY)
        assert gw.state.ledger.list_reservations() == []
    body = refused.json()
    assert refused.status_code == 400 and body["code"] == 1201 and body["data"] is None
    assert "--prices-overlay FILE or KLING_BUDGET_PRICES_OVERLAY" in body["message"]
    assert "unknown model 'kling-v4'" in body["message"]
    assert kling4.sim.tasks() == []
