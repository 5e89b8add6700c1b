"""What the gateway's checks on a tenant's create cost, against the unchecked parse-and-price in the same run.

Per create body (a typical text-to-video body, and one carrying a 1 MB base64 image):

* baseline: ``json.loads(raw, parse_float=Decimal)`` then :func:`~kling_budget.pricing.quote_kling_request`,
  what the gateway did before it bounded its input;
* checked: :func:`~kling_budget.server.request_json.parse_object` (numbers checked as text, depth, NUL and
  lone surrogates), :func:`~kling_budget.pricing.check_body_fields` (the per-endpoint allow-list), then the
  same quote.

The unit is one create body; the ratio is checked / baseline time per body.

Run: ``.venv/bin/python bench/bench_admission.py``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import timeit
from collections.abc import Callable
from decimal import Decimal

from kling_budget.pricing import PriceTable, check_body_fields, quote_kling_request
from kling_budget.server.request_json import parse_object

PATH = "/v1/videos/image2video"
TABLE = PriceTable.default()


def _baseline(raw: bytes) -> None:
    quote_kling_request(TABLE, PATH, json.loads(raw, parse_float=Decimal))


def _checked(raw: bytes) -> None:
    body = parse_object(raw)
    check_body_fields(PATH, body)
    quote_kling_request(TABLE, PATH, body)


def _per_call(fn: Callable[[bytes], None], raw: bytes, seconds: float) -> float:
    number = max(1, int(seconds / max(timeit.timeit(lambda: fn(raw), number=1), 1e-7)))
    return min(timeit.repeat(lambda: fn(raw), number=number, repeat=5)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="Time per repeat and body.")
    args = parser.parse_args()
    small = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a heron at dawn"}
    bodies = {
        "typical body (URL image)": {**small, "image": "https://example.com/heron.png", "cfg_scale": 0.5},
        "1 MB base64 image": {**small, "image": base64.b64encode(os.urandom(750_000)).decode()},
    }
    print("| body | baseline µs | checked µs | added µs | ratio |")
    print("|---|---|---|---|---|")
    for label, body in bodies.items():
        raw = json.dumps(body).encode()
        base = _per_call(_baseline, raw, args.seconds) * 1e6
        checked = _per_call(_checked, raw, args.seconds) * 1e6
        print(f"| {label} | {base:.1f} | {checked:.1f} | {checked - base:+.1f} | {checked / base:.2f} |")


if __name__ == "__main__":
    main()
