"""Simulated accounts: who a request belongs to (API keys, JWTs), the rate limit, and each account's records.

Pure: the :class:`~.state.Simulator` holds the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kling_budget.kling.jwt import TokenError, decode_token, peek_issuer
from kling_budget.simulator.clock import Clock
from kling_budget.simulator.config import AccountConfig
from kling_budget.simulator.packs import Pack
from kling_budget.simulator.protocol import SimError
from kling_budget.simulator.task_model import Task
from kling_budget.types import PackType

__all__ = ["Account", "KeyRing", "rate_limit"]

log = logging.getLogger("kling_budget.simulator")

_TOKEN_CODES = {"malformed": 1002, "signature": 1000, "not_yet_valid": 1003, "expired": 1004}


@dataclass(slots=True)
class Account:
    """One account's packs, tasks (with their indexes), generated videos, held slots and units, rate counter."""

    name: str
    packs: list[Pack]
    tasks: dict[str, Task] = field(default_factory=dict)
    by_external: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, dict[str, None]] = field(default_factory=dict)
    videos: dict[str, dict[str, str]] = field(default_factory=dict)
    active_slots: dict[PackType, int] = field(default_factory=dict)
    held_milli: dict[PackType, int] = field(default_factory=dict)
    rate_second: int = -1
    rate_count: int = 0
    last_costs_ms: int | None = None

    def add_task(self, task: Task) -> None:
        """Index a new task by id, endpoint path and external task id."""
        self.tasks[task.task_id] = task
        self.by_path.setdefault(task.endpoint.path, {})[task.task_id] = None
        if task.external_task_id is not None:
            self.by_external[task.external_task_id] = task.task_id

    def find_task(self, path: str, ref: str) -> Task | None:
        """The task of ``path`` whose ``task_id`` or, failing that, ``external_task_id`` is ``ref``."""
        task = self.tasks.get(ref)
        if task is None or task.endpoint.path != path:
            by_external = self.by_external.get(ref)
            task = self.tasks.get(by_external) if by_external else None
        if task is None or task.endpoint.path != path:
            return None
        return task

    def forget_task(self, task: Task) -> None:
        """Drop a task from every index, with the videos it generated."""
        del self.tasks[task.task_id]
        self.by_path[task.endpoint.path].pop(task.task_id, None)
        if task.external_task_id is not None and self.by_external.get(task.external_task_id) == task.task_id:
            del self.by_external[task.external_task_id]
        for output in task.outputs:
            self.videos.pop(str(output.get("id", "")), None)


class KeyRing:
    """Which account each plain API key and each JWT access key (with its secret) belongs to."""

    def __init__(self) -> None:
        self._access_keys: dict[str, tuple[str, str]] = {}
        self._api_keys: dict[str, str] = {}

    def add(self, account: AccountConfig) -> None:
        """Accept the account's key pairs and API keys."""
        for access_key, secret_key in account.key_pairs:
            self._access_keys[access_key] = (account.name, secret_key)
        for api_key in account.api_keys:
            self._api_keys[api_key] = account.name

    def authenticate(self, authorization: str | None, clock: Clock, leeway: int) -> str:
        """Check an ``Authorization`` header; return the account name.

        Raises:
            SimError: 1001 empty (or no token), 1002 not ``Bearer <token>`` or a malformed JWT, 1000 unknown
                key or bad signature, 1003 ``nbf`` in the future, 1004 expired.
        """
        if authorization is None or not authorization.strip():
            raise SimError(1001)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme == "Bearer" and not token:
            raise SimError(1001, "no token after 'Bearer'")
        if scheme != "Bearer" or " " in token:
            raise SimError(1002, "expected 'Bearer <token>'")
        account = self._api_keys.get(token)
        if account is None:
            account = self._verify_jwt(token, clock, leeway)
        return account

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
