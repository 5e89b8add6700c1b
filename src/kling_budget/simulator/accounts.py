"""Simulated accounts: who a request belongs to (API keys, JWTs), the rate limit, and each account's records.

Legacy ``/v1`` routes take an access-key JWT or an API key; the 2026 design's routes take only an API key
(a JWT there is 1002, as on Kling). Pure: the :class:`~.state.Simulator` holds the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kling_budget.kling.jwt import TokenError, decode_token, peek_issuer
from kling_budget.simulator.clock import Clock
from kling_budget.simulator.config import AccountConfig
from kling_budget.simulator.funding import LedgerEntry, Wallet
from kling_budget.simulator.packs import Pack
from kling_budget.simulator.protocol import SimError
from kling_budget.simulator.task_model import Task
from kling_budget.types import PackType

__all__ = ["Account", "Caller", "KeyRing", "rate_limit"]

log = logging.getLogger("kling_budget.simulator")

_TOKEN_CODES = {"malformed": 1002, "signature": 1000, "not_yet_valid": 1003, "expired": 1004}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the account, and the console name of the API key used (``""`` for a JWT)."""

    account: str
    api_key_name: str = ""


@dataclass(slots=True)
class Account:
    """One account's packs, cash wallet, tasks (with their indexes), generated videos, held slots and units,
    deduction ledgers and rate counter."""

    name: str
    packs: list[Pack]
    wallet: Wallet | None = None
    tasks: dict[str, Task] = field(default_factory=dict)
    by_external: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, dict[str, None]] = field(default_factory=dict)
    model_in_path: dict[str, None] = field(default_factory=dict)
    package_ledger: list[LedgerEntry] = field(default_factory=list)
    balance_ledger: list[LedgerEntry] = field(default_factory=list)
    videos: dict[str, dict[str, str]] = field(default_factory=dict)
    active_slots: dict[PackType, int] = field(default_factory=dict)
    held_milli: dict[PackType, int] = field(default_factory=dict)
    rate_second: int = -1
    rate_count: int = 0
    last_costs_ms: int | None = None

    def add_task(self, task: Task) -> None:
        """Index a new task by id, endpoint path and external task id."""
        self.tasks[task.task_id] = task
        if task.legacy:
            self.by_path.setdefault(task.path, {})[task.task_id] = None
        else:
            self.model_in_path[task.task_id] = None
        if task.external_task_id is not None:
            self.by_external[task.external_task_id] = task.task_id

    def find_task(self, path: str, ref: str) -> Task | None:
        """The task of ``path`` whose ``task_id`` or, failing that, ``external_task_id`` is ``ref``."""
        task = self.tasks.get(ref)
        if task is None or task.path != path:
            by_external = self.by_external.get(ref)
            task = self.tasks.get(by_external) if by_external else None
        if task is None or task.path != path:
            return None
        return task

    def find_model_in_path(self, ref: str, *, external: bool) -> Task | None:
        """The 2026-design task whose ``id`` (or, with ``external``, external id) is ``ref``."""
        task_id = self.by_external.get(ref) if external else ref
        task = self.tasks.get(task_id) if task_id else None
        return None if task is None or task.legacy else task

    def forget_task(self, task: Task) -> None:
        """Drop a task from every index, with the videos it generated."""
        del self.tasks[task.task_id]
        if task.legacy:
            self.by_path[task.path].pop(task.task_id, None)
        else:
            self.model_in_path.pop(task.task_id, None)
        if task.external_task_id is not None and self.by_external.get(task.external_task_id) == task.task_id:
            del self.by_external[task.external_task_id]
        for output in task.outputs:
            self.videos.pop(str(output.get("id", "")), None)

    def forget_deductions_before(self, cutoff: int) -> None:
        """Drop deduction-ledger rows older than ``cutoff`` (Unix ms)."""
        for ledger in (self.package_ledger, self.balance_ledger):
            keep = next((i for i, entry in enumerate(ledger) if entry.time >= cutoff), len(ledger))
            del ledger[:keep]


class KeyRing:
    """Which account each plain API key and each JWT access key (with its secret) belongs to."""

    def __init__(self) -> None:
        self._access_keys: dict[str, tuple[str, str]] = {}
        self._api_keys: dict[str, Caller] = {}

    def add(self, account: AccountConfig) -> None:
        """Accept the account's key pairs and API keys."""
        for access_key, secret_key in account.key_pairs:
            self._access_keys[access_key] = (account.name, secret_key)
        for api_key in account.api_keys:
            self._api_keys[api_key] = Caller(account.name, account.api_key_name(api_key))

    def authenticate(
        self,
        authorization: str | None,
        clock: Clock,
        leeway: int,
        *,
        api_key_only: bool = False,
        any_case: bool = False,
    ) -> Caller:
        """Check an ``Authorization`` header; return who sent it.

        Legacy routes want the scheme spelled ``Bearer``; with ``any_case`` (the 2026 routes) it may be
        spelled in any case; ``api_key_only`` routes (the 2026 design) refuse JWTs.

        Raises:
            SimError: 1001 empty (or no token), 1002 not ``Bearer <token>``, a malformed JWT or (with
                ``api_key_only``) any JWT, 1000 unknown key or bad signature, 1003 ``nbf`` in the future,
                1004 expired.
        """
        if authorization is None or not authorization.strip():
            raise SimError(1001)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        bearer = scheme.lower() == "bearer" if any_case or api_key_only else scheme == "Bearer"
        if bearer and not token:
            raise SimError(1001, "no token after 'Bearer'")
        if not bearer or " " in token:
            raise SimError(1002, "expected 'Bearer <token>'")
        caller = self._api_keys.get(token)
        if caller is not None:
            return caller
        if api_key_only:
            if "." in token:
                raise SimError(1002, "this API takes an API key; access-key JWTs are for the legacy /v1 API")
            raise SimError(1000, "unknown API key")
        return Caller(self._verify_jwt(token, clock, leeway))

    def _verify_jwt(self, token: str, clock: Clock, leeway: int) -> str:
        if "." not in token:
            raise SimError(1000, "unknown API key")
        try:
            issuer = peek_issuer(token)
        except TokenError as exc:
            raise SimError(1002, str(exc)) from None
        entry = self._access_keys.get(issuer)
        if entry is None:
            raise SimError(1000, "unknown access key")
        account, secret = entry
        try:
            decode_token(token, secret, now=clock.now_ms() // 1000, leeway=leeway)
        except TokenError as exc:
            raise SimError(_TOKEN_CODES.get(exc.reason, 1000), str(exc)) from None
        log.debug("authenticated access key %s", issuer)
        return account


def rate_limit(acct: Account, now: int, limit: int | None) -> None:
    """Count one request in the account's current clock second.

    Raises:
        SimError: 1302 when this is more than ``limit`` requests in that second.
    """
    if limit is None:
        return
    second = now // 1000
    if acct.rate_second != second:
        acct.rate_second, acct.rate_count = second, 0
    acct.rate_count += 1
    if acct.rate_count > limit:
        raise SimError(1302, f"more than {limit} requests per second")
