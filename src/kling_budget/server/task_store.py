"""Task ownership (table ``gateway_tasks``): which virtual key created which reservation and Kling task.

One row per forwarded create, keyed by the reservation id — which is also the ``external_task_id`` the
gateway sends to Kling. The row keeps the client's own ``external_task_id`` and ``callback_url``, Kling's
``task_id`` once known, the latest task state seen (``data``, Kling's JSON as received), whether the
reservation is settled, and when the settle worker should look at it next.

Statuses: ``submitting`` (sent, Kling's answer not recorded yet), ``unknown`` (Kling never confirmed the
create; the hold stays until a lookup by external id tells), Kling's own ``submitted``, ``processing``,
``succeed``, ``failed``, and ``rejected`` (Kling definitely refused the create; hidden from clients, its
client external id freed for a retry). Rows are only written by the gateway; the ledger never reads them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kling_budget.kling._core import json_text
from kling_budget.ledger.backend import Backend, Connection, Row, Statements
from kling_budget.ledger.locks import skip_locked

__all__ = [
    "MODE_DETAIL_KEY",
    "TASK_COLUMNS",
    "DuplicateExternalIdError",
    "TaskRow",
    "TaskStore",
    "new_id",
    "now_micros",
    "task_row",
]

TASK_COLUMNS = (
    "g.reservation_id, g.key_id, g.endpoint, g.client_external_id, g.callback_url, g.task_id, g.status, "
    "g.data, g.settled, g.created_at, g.updated_at, g.checks, r.state, r.pack_type"
)
"""The columns of a :class:`TaskRow`: ``gateway_tasks g`` joined with its reservation ``r``."""
HIDDEN_STATUSES = ("rejected",)
MODE_DETAIL_KEY = "mode"
"""Key of a gateway reservation's ``detail`` holding the priced mode (a video extension's source mode)."""
_MAX_VIDEOS = 16
_MAX_VIDEO_ID = 200


class DuplicateExternalIdError(Exception):
    """The key already has a task with this ``external_task_id`` (Kling answers 1201)."""


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One ``gateway_tasks`` row joined with its reservation's state."""

    reservation_id: str
    key_id: int
    endpoint: str
    client_external_id: str | None
    callback_url: str | None
    task_id: str | None
    status: str
    data: dict[str, Any] | None
    settled: bool
    created_at: int
    updated_at: int
    checks: int
    reservation_state: str
    pack_type: str = ""


def task_row(row: Row) -> TaskRow:
    """A :data:`TASK_COLUMNS` row as a :class:`TaskRow`."""
    return TaskRow(
        reservation_id=row[0],
        key_id=int(row[1]),
        endpoint=row[2],
        client_external_id=row[3],
        callback_url=row[4],
        task_id=row[5],
        status=row[6],
        data=None if row[7] is None else json.loads(row[7]),
        settled=bool(row[8]),
        created_at=int(row[9]),
        updated_at=int(row[10]),
        checks=int(row[11]),
        reservation_state=row[12],
        pack_type=row[13],
    )


def _video_ids(data: Any) -> list[str]:
    """The ``task_result.videos[].id`` values of a task's data (bounded)."""
    result = data.get("task_result") if isinstance(data, dict) else None
    videos = result.get("videos") if isinstance(result, dict) else None
    if not isinstance(videos, list):
        return []
    ids = [v.get("id") for v in videos[:_MAX_VIDEOS] if isinstance(v, dict)]
    return [i for i in ids if isinstance(i, str) and 0 < len(i) <= _MAX_VIDEO_ID]


def new_id() -> str:
    """A random 128-bit hex id (request and reservation ids; not secrets, so no system entropy call)."""
    return f"{random.getrandbits(128):032x}"


def now_micros() -> int:
    """Unix time in microseconds (the ledger's time unit)."""
    return int(datetime.now(UTC).timestamp() * 1_000_000)


def dumps(data: Any) -> str:
    """Compact JSON; Decimals written as numbers (see :func:`kling_budget.kling._core.json_text`)."""
    return json_text(data)


class TaskStore:
    """Reads and writes ``gateway_tasks`` on the ledger's backend (sync: call from a worker thread)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- writes used inside ledger transactions (ledger ``also=`` hooks) --------------------------------

    @staticmethod
    def insert_hook(
        reservation_id: str,
        *,
        key_id: int,
        endpoint: str,
        client_external_id: str | None,
        callback_url: str | None,
        check_at: int,
    ) -> Statements:
        """A hook inserting the ownership row in the reservation's transaction (raises on a duplicate)."""
        now = now_micros()
        return Statements(
            (
                (
                    "INSERT INTO gateway_tasks (reservation_id, key_id, endpoint, client_external_id, callback_url, "
                    "status, created_at, updated_at, next_check_at) VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?, ?) "
                    "ON CONFLICT DO NOTHING RETURNING reservation_id",
                    (reservation_id, key_id, endpoint, client_external_id, callback_url, now, now, check_at),
                    True,
                ),
            ),
            error=lambda: DuplicateExternalIdError(client_external_id or reservation_id),
        )

    @staticmethod
    def record_hook(reservation_id: str, *, task_id: str, status: str, data: Any, check_at: int) -> Statements:
        """A hook recording Kling's task id and first answer in the ``mark_submitted`` transaction."""
        return Statements(
            (
                (
                    "UPDATE gateway_tasks SET task_id = ?, status = ?, data = ?, updated_at = ?, next_check_at = ? "
                    "WHERE reservation_id = ?",
                    (task_id, status, dumps(data), now_micros(), check_at, reservation_id),
                    False,
                ),
            )
        )

    # -- plain writes ----------------------------------------------------------------------------------

    def update(
        self,
        reservation_id: str,
        *,
        status: str | None = None,
        data: Any = None,
        settled: bool | None = None,
        free_external_id: bool = False,
        check_at: int | None = None,
        task_id: str | None = None,
    ) -> None:
        """Change a row: latest status/data, settled flag, next check time, Kling's task id (if not known
        yet); ``free_external_id`` after a definite rejection so the client may retry with the same id."""
        self.backend.run(
            self.update_hook(
                reservation_id,
                status=status,
                data=data,
                settled=settled,
                free_external_id=free_external_id,
                check_at=check_at,
                task_id=task_id,
            )
        )

    @staticmethod
    def update_hook(
        reservation_id: str,
        *,
        status: str | None = None,
        data: Any = None,
        settled: bool | None = None,
        free_external_id: bool = False,
        check_at: int | None = None,
        task_id: str | None = None,
    ) -> Callable[[Connection], None]:
        """:meth:`update` as a hook for another transaction (the ledger's commit or release of the task)."""
        sets: list[str] = ["updated_at = ?"]
        params: list[Any] = [now_micros()]
        if status is not None:
            sets.append("status = ?")
            params.append(status)
        if data is not None:
            sets.append("data = ?")
            params.append(dumps(data))
        if settled is not None:
            sets.append("settled = ?")
            params.append(int(settled))
        if free_external_id:
            sets.append("client_external_id = NULL")
        if check_at is not None:
            sets.append("next_check_at = ?")
            params.append(check_at)
        if task_id is not None:
            sets.append("task_id = COALESCE(task_id, ?)")
            params.append(task_id)
        params.append(reservation_id)
        videos = _video_ids(data)

        def hook(conn: Connection) -> None:
            conn.execute(f"UPDATE gateway_tasks SET {', '.join(sets)} WHERE reservation_id = ?", params)
            for video_id in videos:
                conn.execute(
                    "INSERT INTO gateway_videos (video_id, reservation_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (video_id, reservation_id),
                )

        return hook

    def mark_forwarded(self, reservation_id: str, status: str) -> bool:
        """Record that ``status`` of this task goes to the client's callback_url; ``False`` if it already went
        (by any instance, through any path): each (task, status) is forwarded at most once."""
        return bool(
            self.backend.run(
                lambda conn: conn.execute(
                    "INSERT INTO gateway_forwards (reservation_id, status, forwarded_at) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (reservation_id, status, now_micros()),
                )
            )
        )

    def source_video(self, key_id: int, video_id: str) -> tuple[str, str | None] | None:
        """(model, mode) of the gateway task of key ``key_id`` that produced ``video_id``; ``None`` when no task
        of this key did (another key's video is as unknown as a foreign one). ``mode`` is ``None`` if not kept."""
        row = self.backend.run(
            lambda conn: conn.fetchone(
                "SELECT r.model, r.detail FROM gateway_videos v JOIN gateway_tasks g ON g.reservation_id = "
                "v.reservation_id JOIN reservations r ON r.id = v.reservation_id WHERE v.video_id = ? AND g.key_id = ?",
                (video_id, key_id),
            ),
            write=False,
        )
        if row is None or not row[0]:
            return None
        try:
            detail = json.loads(row[1] or "{}")
        except ValueError:
            detail = {}
        mode = detail.get(MODE_DETAIL_KEY) if isinstance(detail, dict) else None
        return str(row[0]), mode if isinstance(mode, str) and mode else None

    def claim_due(self, *, now: int, limit: int, delay: Callable[[int], int]) -> list[TaskRow]:
        """Claim up to ``limit`` unsettled rows due by ``now``: push each one's next check ``delay(checks)``
        microseconds ahead, so another instance's worker skips them (``SKIP LOCKED`` on PostgreSQL)."""

        def tx(conn: Connection) -> list[TaskRow]:
            ids = conn.fetchall(
                "SELECT reservation_id, checks FROM gateway_tasks WHERE settled = 0 AND next_check_at <= ? "
                f"ORDER BY next_check_at LIMIT ?{skip_locked(conn)}",
                (now, limit),
            )
            for reservation_id, checks in ids:
                conn.execute(
                    "UPDATE gateway_tasks SET checks = checks + 1, next_check_at = ? WHERE reservation_id = ?",
                    (now + delay(int(checks)), reservation_id),
                )
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            rows = conn.fetchall(
                f"SELECT {TASK_COLUMNS} FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id "
                f"WHERE g.reservation_id IN ({marks})",
                [i[0] for i in ids],
            )
            return [task_row(r) for r in rows]

        return self.backend.run(tx)

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, reservation_id: str) -> TaskRow | None:
        """One row by reservation id."""
        row = self.backend.run(
            lambda conn: conn.fetchone(
                f"SELECT {TASK_COLUMNS} FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id "
                "WHERE g.reservation_id = ?",
                (reservation_id,),
            ),
            write=False,
        )
        return None if row is None else task_row(row)

    def find(self, key_id: int, endpoint: str, ref: str) -> TaskRow | None:
        """The key's task on ``endpoint`` whose task id, own external id or reservation id is ``ref``."""

        def tx(conn: Connection) -> Row | None:
            base = (
                f"SELECT {TASK_COLUMNS} FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id "
                "WHERE g.key_id = ? AND g.endpoint = ? AND g.status <> 'rejected' AND "
            )
            for condition in ("g.task_id = ?", "g.client_external_id = ?", "g.reservation_id = ?"):
                row = conn.fetchone(base + condition, (key_id, endpoint, ref))
                if row is not None:
                    return row
            return None

        row = self.backend.run(tx, write=False)
        return None if row is None else task_row(row)

    def find_for_callback(self, task_id: str | None, external_id: str | None) -> TaskRow | None:
        """The row a Kling callback is about: by task id, else by our external id (the reservation id)."""

        def tx(conn: Connection) -> Row | None:
            base = f"SELECT {TASK_COLUMNS} FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id WHERE "
            if task_id:
                row = conn.fetchone(base + "g.task_id = ?", (task_id,))
                if row is not None:
                    return row
            if external_id:
                return conn.fetchone(base + "g.reservation_id = ?", (external_id,))
            return None

        row = self.backend.run(tx, write=False)
        return None if row is None else task_row(row)

    def list_for_key(self, key_id: int, endpoint: str, *, page: int, size: int) -> list[TaskRow]:
        """The key's visible tasks on ``endpoint`` that have a Kling task id, newest first."""
        rows = self.backend.run(
            lambda conn: conn.fetchall(
                f"SELECT {TASK_COLUMNS} FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id "
                "WHERE g.key_id = ? AND g.endpoint = ? AND g.task_id IS NOT NULL AND g.status <> 'rejected' "
                "ORDER BY g.created_at DESC, g.reservation_id DESC LIMIT ? OFFSET ?",
                (key_id, endpoint, size, (page - 1) * size),
            ),
            write=False,
        )
        return [task_row(r) for r in rows]

    def find_refs(self, key_id: int, refs: Sequence[str], *, external: bool) -> list[TaskRow]:
        """The key's visible tasks named by ``refs`` (at most a few dozen): by Kling task id, or with
        ``external`` by the client's own external id or the reservation id (the id a 504 told it to use)."""
        if not refs:
            return []
        marks = ", ".join("?" for _ in refs)
        if external:
            condition, params = f"(g.client_external_id IN ({marks}) OR g.reservation_id IN ({marks}))", [*refs, *refs]
        else:
            condition, params = f"g.task_id IN ({marks})", list(refs)
        rows = self.backend.run(
            lambda conn: conn.fetchall(
                f"SELECT {TASK_COLUMNS} FROM gateway_tasks g JOIN reservations r ON r.id = g.reservation_id "
                f"WHERE g.key_id = ? AND g.status <> 'rejected' AND {condition}",
                [key_id, *params],
            ),
            write=False,
        )
        return [task_row(r) for r in rows]

    def open_count(self) -> int:
        """Unsettled rows (for metrics)."""
        row = self.backend.run(
            lambda conn: conn.fetchone("SELECT COUNT(*) FROM gateway_tasks WHERE settled = 0"), write=False
        )
        return int(row[0]) if row else 0
