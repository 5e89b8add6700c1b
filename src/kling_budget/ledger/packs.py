"""Purchased resource packs: registering them, and drawing a job's units from them (soonest expiry first)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kling_budget.errors import (
    ConfigurationError,
)
from kling_budget.ledger.backend import Connection
from kling_budget.ledger.budget_store import LedgerBase, LedgerConfig
from kling_budget.ledger.locks import lock_config
from kling_budget.ledger.records import Pack, ReservationInfo
from kling_budget.money import usd_nano_for_units
from kling_budget.types import PackType
from kling_budget.windows import from_micros, to_micros

__all__ = ["Alloc", "PackStore"]


@dataclass(frozen=True, slots=True)
class Alloc:
    pack_id: int | None
    milli: int
    price_nano: int
    per_milli: int

    @property
    def usd_nano(self) -> int:
        return usd_nano_for_units(self.milli, self.price_nano, self.per_milli)


class PackStore(LedgerBase):
    """Packs and allocations: the pack half of the ledger."""

    def add_pack(self, pack: Pack, *, now: datetime | None = None) -> Pack:
        """Register a purchased resource pack (units, price paid, validity)."""
        if not pack.name.strip() or len(pack.name) > 100:
            raise ConfigurationError("a pack needs a name of 1 to 100 characters")
        if pack.units_milli <= 0:
            raise ConfigurationError("a pack must contain more than 0 units")
        if pack.price_nano < 0:
            raise ConfigurationError("a pack's price cannot be negative")
        if pack.expires_at is not None and pack.expires_at <= pack.starts_at:
            raise ConfigurationError("a pack must expire after it starts")
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> Pack:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            if conn.fetchone("SELECT 1 FROM packs WHERE name = ?", (pack.name,)):
                raise ConfigurationError(f"a pack named {pack.name!r} already exists")
            conn.execute(
                "INSERT INTO packs (name, pack_type, units_milli, price_nano, starts_at, expires_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    pack.name,
                    pack.pack_type.value,
                    pack.units_milli,
                    pack.price_nano,
                    to_micros(pack.starts_at),
                    None if pack.expires_at is None else to_micros(pack.expires_at),
                    at,
                ),
            )
            self._bump_config(conn)
            return self._packs(conn, "WHERE name = ?", (pack.name,))[0]

        return self.backend.run(tx)

    def list_packs(self) -> list[Pack]:
        """Every registered pack, soonest expiry first."""
        return self.backend.run(lambda conn: self._packs(conn, "", ()), write=False)

    def remove_pack(self, name: str) -> None:
        """Remove a pack nothing was drawn from (otherwise it stays, for the record)."""

        def tx(conn: Connection) -> None:
            lock_config(conn, exclusive=True)  # dialect hook: see ledger/locks.py
            row = conn.fetchone("SELECT id FROM packs WHERE name = ?", (name,))
            if row is None:
                raise ConfigurationError(f"no pack named {name!r}")
            used = conn.fetchone("SELECT COUNT(*) FROM allocations WHERE pack_id = ?", (row[0],))
            if used and used[0]:
                raise ConfigurationError(
                    f"pack {name!r} has {used[0]} jobs drawn from it and stays in the ledger for the record"
                )
            conn.execute("DELETE FROM packs WHERE id = ?", (row[0],))
            self._bump_config(conn)

        self.backend.run(tx)

    @staticmethod
    def _packs(conn: Connection, where: str, params: Sequence[Any]) -> list[Pack]:
        rows = conn.fetchall(
            "SELECT id, name, pack_type, units_milli, price_nano, starts_at, expires_at, held_milli, "
            f"committed_milli FROM packs {where} ORDER BY COALESCE(expires_at, 9223372036854775807), id",
            params,
        )
        return [
            Pack(
                id=r[0],
                name=r[1],
                pack_type=PackType(r[2]),
                units_milli=r[3],
                price_nano=r[4],
                starts_at=from_micros(r[5]),
                expires_at=None if r[6] is None else from_micros(r[6]),
                held_milli=r[7],
                committed_milli=r[8],
            )
            for r in rows
        ]

    def usd_nano_for(self, pack_type: PackType, milli: int, *, now: datetime | None = None) -> int:
        """What ``milli`` units of ``pack_type`` cost in nano-dollars if a job drew them at ``now``: from the
        active packs, soonest expiry first, at the price paid, the rest at the list price. This is what a
        reservation holds against dollar budgets, so checks and quotes agree with :meth:`reserve`."""
        at = to_micros(now or self.now())

        def tx(conn: Connection) -> int:
            config = self._load_config(conn)
            return sum(a.usd_nano for a in self._allocate(conn, config, pack_type, milli, at, lock=False))

        return self.backend.run(tx, write=False)

    def _allocate(
        self, conn: Connection, config: LedgerConfig, pack_type: PackType, milli: int, at: int, *, lock: bool = True
    ) -> list[Alloc]:
        """Draw ``milli`` units from active packs, soonest expiry first; the rest at the list price."""
        allocs: list[Alloc] = []
        remaining = milli
        if remaining > 0 and pack_type.value in config.pack_types:
            lock_rows = " FOR UPDATE" if lock and conn.dialect == "postgresql" else ""
            rows = conn.fetchall(
                "SELECT id, units_milli - held_milli - committed_milli, price_nano, units_milli FROM packs "
                "WHERE pack_type = ? AND starts_at <= ? AND (expires_at IS NULL OR expires_at > ?) "
                "AND held_milli + committed_milli < units_milli "
                f"ORDER BY COALESCE(expires_at, 9223372036854775807), id{lock_rows}",
                (pack_type.value, at, at),
            )
            for pack_id, available, price_nano, units_milli in rows:
                take = min(remaining, int(available))
                allocs.append(Alloc(pack_id, take, price_nano, units_milli))
                remaining -= take
                if remaining == 0:
                    break
        if remaining > 0 or not allocs:
            allocs.append(Alloc(None, remaining, self.list_prices[pack_type], 1000))
        return allocs

    @staticmethod
    def _store_allocs(
        conn: Connection,
        reservation_id: str,
        allocs: Sequence[Alloc],
        *,
        committed: bool,
        first_position: int = 0,
    ) -> None:
        for position, alloc in enumerate(allocs, start=first_position):
            conn.execute(
                "INSERT INTO allocations (reservation_id, position, pack_id, held_milli, committed_milli, "
                "price_nano, per_milli) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reservation_id,
                    position,
                    alloc.pack_id,
                    0 if committed else alloc.milli,
                    alloc.milli if committed else 0,
                    alloc.price_nano,
                    alloc.per_milli,
                ),
            )
            if alloc.pack_id is not None and alloc.milli:
                column = "committed_milli" if committed else "held_milli"
                conn.execute(f"UPDATE packs SET {column} = {column} + ? WHERE id = ?", (alloc.milli, alloc.pack_id))

    def _settle_allocs(
        self, conn: Connection, config: LedgerConfig, info: ReservationInfo, actual: int, at: int
    ) -> int:
        """Turn the held allocations into committed ones for ``actual`` units; return the dollars (nano).

        Allocation rows exist only for reservations that drew from a pack; any other hold was priced at one
        rate, so its committed part costs the same rate.
        """
        rows = (
            conn.fetchall(
                "SELECT position, pack_id, held_milli, price_nano, per_milli FROM allocations "
                "WHERE reservation_id = ? ORDER BY position",
                (info.id,),
            )
            if info.pack_type.value in config.pack_types
            else []
        )
        if not rows:
            covered = min(actual, info.units_milli)
            usd = usd_nano_for_units(covered, info.usd_nano, info.units_milli) if covered else 0
            remaining = actual - covered
        else:
            remaining = actual
            usd = 0
        for position, pack_id, held, price_nano, per_milli in rows:
            used = min(remaining, held)
            remaining -= used
            conn.execute(
                "UPDATE allocations SET committed_milli = ? WHERE reservation_id = ? AND position = ?",
                (used, info.id, position),
            )
            if pack_id is not None:
                conn.execute(
                    "UPDATE packs SET held_milli = held_milli - ?, committed_milli = committed_milli + ? WHERE id = ?",
                    (held, used, pack_id),
                )
            usd += usd_nano_for_units(used, price_nano, per_milli)
        if remaining > 0:
            extra = self._allocate(conn, config, info.pack_type, remaining, at)
            if any(a.pack_id is not None for a in extra):
                self._store_allocs(conn, info.id, extra, committed=True, first_position=len(rows))
            usd += sum(a.usd_nano for a in extra)
        return usd
