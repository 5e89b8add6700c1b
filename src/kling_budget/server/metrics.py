"""Gateway observability: Prometheus metrics (text exposition format 0.0.4) and JSON log lines.

Metrics are per process (Prometheus scrapes each instance; sum across instances in queries):

* ``kling_gateway_requests_total{route,method,status}`` — every HTTP request, by route template;
* ``kling_gateway_denials_total{budget}`` — creates refused by a hard budget;
* ``kling_gateway_units_total{event,pack_type}`` — units ``reserved``, ``committed`` and ``released``;
* ``kling_gateway_upstream_seconds{operation}`` — histogram of Kling's latency (create, query, lookup);
* ``kling_gateway_upstream_errors_total{code}`` — Kling's non-zero codes (``transport`` when none);
* ``kling_gateway_in_flight_creates`` — creates between reservation and settlement of their outcome.

Log lines carry no secret: credentials, tokens and bodies are never logged, keys only by *name*.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONTENT_TYPE", "JsonLogFormatter", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_LOG_FIELDS = (
    "request_id",
    "route",
    "method",
    "status",
    "code",
    "key",
    "latency_ms",
    "task_id",
    "reservation_id",
    "upstream_request_id",
    "budget",
    "instance",
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


class _Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1


class Metrics:
    """Counters and histograms of one gateway process; :meth:`render` writes the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._denials: dict[tuple[str], int] = defaultdict(int)
        self._units: dict[tuple[str, str], int] = defaultdict(int)
        self._upstream: dict[str, _Histogram] = defaultdict(_Histogram)
        self._upstream_errors: dict[tuple[str], int] = defaultdict(int)
        self.in_flight_creates = 0
        self.started = time.time()

    def request(self, route: str, method: str, status: int) -> None:
        """Count one HTTP request."""
        with self._lock:
            self._requests[(route, method, str(status))] += 1

    def denial(self, budget: str) -> None:
        """Count one create denied by ``budget``."""
        with self._lock:
            self._denials[(budget,)] += 1

    def units(self, event: str, pack_type: str, milli: int) -> None:
        """Add ``milli`` milli-units ``reserved``, ``committed`` or ``released``."""
        with self._lock:
            self._units[(event, pack_type)] += milli

    def upstream(self, operation: str, seconds: float, code: int | None, *, transport_error: bool = False) -> None:
        """Record one exchange with Kling: its latency, and its error code when not 0."""
        with self._lock:
            self._upstream[operation].observe(seconds)
            if transport_error:
                self._upstream_errors[("transport",)] += 1
            elif code not in (None, 0):
                self._upstream_errors[(str(code),)] += 1

    def render(self, extra_gauges: dict[str, float] | None = None) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []

        def counter(name: str, help_text: str, labels: tuple[str, ...], data: dict[Any, int], scale: int = 1) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for values, count in sorted(data.items()):
                number = f"{count / scale:g}" if scale != 1 else str(count)
                lines.append(f"{name}{_labels(labels, values)} {number}")

        with self._lock:
            counter(
                "kling_gateway_requests_total",
                "HTTP requests by route template, method and status.",
                ("route", "method", "status"),
                self._requests,
            )
            counter("kling_gateway_denials_total", "Creates denied by a hard budget.", ("budget",), self._denials)
            lines.append("# HELP kling_gateway_units_total Kling units reserved, committed and released.")
            lines.append("# TYPE kling_gateway_units_total counter")
            for (event, pack), milli in sorted(self._units.items()):
                whole, frac = divmod(milli, 1000)
                text = f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
                lines.append(f"kling_gateway_units_total{_labels(('event', 'pack_type'), (event, pack))} {text}")
            lines.append("# HELP kling_gateway_upstream_seconds Latency of requests to Kling.")
            lines.append("# TYPE kling_gateway_upstream_seconds histogram")
            for operation, hist in sorted(self._upstream.items()):
                for bound, count in zip(LATENCY_BUCKETS, hist.buckets, strict=True):
                    labels = _labels(("operation", "le"), (operation, f"{bound:g}"))
                    lines.append(f"kling_gateway_upstream_seconds_bucket{labels} {count}")
                labels = _labels(("operation", "le"), (operation, "+Inf"))
                lines.append(f"kling_gateway_upstream_seconds_bucket{labels} {hist.count}")
                lines.append(
                    f"kling_gateway_upstream_seconds_sum{_labels(('operation',), (operation,))} {hist.total:.6f}"
                )
                lines.append(
                    f"kling_gateway_upstream_seconds_count{_labels(('operation',), (operation,))} {hist.count}"
                )
            counter(
                "kling_gateway_upstream_errors_total",
                "Non-zero business codes from Kling ('transport' when no usable answer).",
                ("code",),
                self._upstream_errors,
            )
            gauges = {
                "kling_gateway_in_flight_creates": float(self.in_flight_creates),
                "kling_gateway_start_time_seconds": self.started,
                **(extra_gauges or {}),
            }
        for name, value in gauges.items():
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}" if name != "kling_gateway_start_time_seconds" else f"{name} {value:.3f}")
        return "\n".join(lines) + "\n"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the gateway's known fields (no secrets)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"), default=str)
