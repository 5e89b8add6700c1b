"""The gateway's shared state: configuration, ledger, key and task stores, metrics, the upstream connection.

``create_app(config)`` (:mod:`kling_budget.server.app`) builds one :class:`GatewayState` and mounts the proxy
(Kling's API, ``/callbacks/kling``), ``/healthz``, ``/metrics``, the admin API (:mod:`kling_budget.server.admin`)
and the dashboard (:mod:`kling_budget.server.dashboard`) on it. Every ledger and key-store call is blocking:
handlers await :meth:`GatewayState.run_sync`, so the event loop never waits on the database.

The proxy answers in Kling's envelope ``{"code","message","request_id","data"}``; the admin API answers its own
JSON errors. Nothing ever puts the real Kling credentials, a virtual secret or the admin token in a response, a
log line or an error.
"""

from __future__ import annotations

import hmac
import os
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from kling_budget.designs import is_model_in_path
from kling_budget.errors import ConfigurationError
from kling_budget.kling._core import TASKS_PATH, resolve_base_url
from kling_budget.kling.auth import ENV_API_KEY, APIKeyAuth, Auth, JWTAuth, resolve_auth
from kling_budget.server.callback_guard import CallbackPolicy
from kling_budget.server.callback_tokens import CallbackTokens
from kling_budget.server.keys import KeyStore, data_dir, load_master_key
from kling_budget.server.limits import ServerLimits
from kling_budget.server.metrics import Metrics
from kling_budget.server.task_store import TaskStore
from kling_budget.server.threads import BlockingPool
from kling_budget.server.upstream import Upstream

__all__ = [
    "ADMIN_TOKEN_ENV",
    "METRICS_TOKEN_ENV",
    "WEBHOOK_SECRET_ENV",
    "GatewayConfig",
    "GatewayState",
    "Secret",
]

P = ParamSpec("P")
T = TypeVar("T")

ADMIN_TOKEN_ENV = "KLING_BUDGET_ADMIN_TOKEN"
METRICS_TOKEN_ENV = "KLING_BUDGET_METRICS_TOKEN"
WEBHOOK_SECRET_ENV = "KLING_WEBHOOK_SECRET"
CALLBACK_PATH = "/callbacks/kling"


class Secret:
    """A secret string that never shows itself in ``repr``/``str``; compare it in constant time."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def generate(cls) -> Secret:
        """A new random token (256 bits, url-safe)."""
        return cls("kbadm_" + secrets.token_urlsafe(32))

    def reveal(self) -> str:
        """The plaintext (print it once, e.g. at ``serve --demo`` start-up; never log it)."""
        return self._value

    def matches(self, candidate: str | None) -> bool:
        """Constant-time comparison with ``candidate``."""
        if not candidate:
            return False
        return hmac.compare_digest(self._value.encode("utf-8"), candidate.encode("utf-8"))

    def __repr__(self) -> str:
        return "Secret([REDACTED])"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway is configured with.

    Attributes:
        db: ledger URL (``None``: ``KLING_BUDGET_DB`` or the default SQLite file).
        upstream_url: Kling's host (or the simulator's URL).
        upstream_auth: the real Kling credentials (never shown): an access key + secret key pair (signed into
            JWTs) or an API key.
        upstream_api_key_auth: a Kling API key for the 2026 design, whose routes refuse JWTs, when
            ``upstream_auth`` is an access key pair (``KLING_API_KEY`` set beside ``KLING_ACCESS_KEY`` and
            ``KLING_SECRET_KEY``). See :attr:`model_in_path_auth`.
        public_url: this gateway's public base URL; when set, forwarded creates carry
            ``callback_url = <public_url>/callbacks/kling/<reservation id>/<token>``.
        webhook_secret: ``KLING_WEBHOOK_SECRET`` (``whsec_...``) to verify Kling's callbacks, if any.
        admin_token: the admin API bearer token (part B), if any.
        prices: a price table file instead of the packaged one.
        prices_overlay: a price overlay file on top of the table (``--prices-overlay``).
        home: the data directory (holds ``master.key``); default ``$KLING_BUDGET_HOME`` or the user data dir.
        upstream_timeout: seconds for one request to Kling.
        settle_interval: seconds between settle-worker sweeps (0 disables the worker).
        key_cache_seconds: how long a verified virtual key is trusted without re-reading it.
        shutdown_grace: seconds to wait at shutdown for in-flight creates to be recorded.
        instance: a name for this process in logs (default: random).
        allow_callback_hosts: host names, addresses or networks a tenant's ``callback_url`` may point at although
            they are not public (``--allow-callback-host``).
        listen_port: the port this process listens on (a callback to a local address at it is refused).
        limits: body and header caps, timeouts and the connection limit.
        metrics_token: ``KLING_BUDGET_METRICS_TOKEN``: ``/metrics`` then needs ``Authorization: Bearer`` it.
        public_metrics: serve ``/metrics`` without a token to any address (default: loopback clients only).
        callback_requery_seconds: at least this long between two callback-triggered queries of one task.
        health_timeout: seconds ``/healthz`` waits for the ledger before answering unavailable.
    """

    upstream_url: str
    upstream_auth: Auth = field(repr=False)
    upstream_api_key_auth: APIKeyAuth | None = field(default=None, repr=False)
    db: str | None = None
    public_url: str | None = None
    webhook_secret: Secret | None = None
    admin_token: Secret | None = None
    prices: str | None = None
    prices_overlay: str | None = None
    home: Path | None = None
    upstream_timeout: float = 30.0
    settle_interval: float = 1.0
    key_cache_seconds: float = 1.0
    shutdown_grace: float = 60.0
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    allow_callback_hosts: tuple[str, ...] = ()
    listen_port: int | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)
    metrics_token: Secret | None = None
    public_metrics: bool = False
    callback_requery_seconds: float = 1.0
    health_timeout: float = 1.0

    @classmethod
    def from_env(
        cls,
        *,
        upstream_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> GatewayConfig:
        """Read the real credentials (``KLING_ACCESS_KEY``/``KLING_SECRET_KEY`` and/or ``KLING_API_KEY``), the
        upstream host (``KLING_API_BASE``), ``KLING_WEBHOOK_SECRET``, ``KLING_BUDGET_ADMIN_TOKEN`` and
        ``KLING_BUDGET_METRICS_TOKEN`` from the environment; ``options`` set the other fields.

        With both kinds of credentials, ``/v1`` and the account routes use the access key pair and the 2026
        design uses the API key; with only an API key, it serves both designs; with only an access key pair,
        the 2026 design is refused (Kling takes no JWT there).

        Raises:
            ConfigurationError: no Kling credentials, or a bad URL.
        """
        env = os.environ if environ is None else environ
        auth = resolve_auth(None, None, None, env)
        api_key = env.get(ENV_API_KEY, "").strip()
        if isinstance(auth, JWTAuth) and api_key:
            options.setdefault("upstream_api_key_auth", APIKeyAuth(api_key))
        base = resolve_base_url(upstream_url, None, env)
        secret = env.get(WEBHOOK_SECRET_ENV, "").strip()
        admin = env.get(ADMIN_TOKEN_ENV, "").strip()
        metrics = env.get(METRICS_TOKEN_ENV, "").strip()
        options.setdefault("webhook_secret", Secret(secret) if secret else None)
        options.setdefault("admin_token", Secret(admin) if admin else None)
        options.setdefault("metrics_token", Secret(metrics) if metrics else None)
        return cls(upstream_url=base, upstream_auth=auth, **options)

    def __post_init__(self) -> None:
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"--public-url must start with http:// or https://, got {self.public_url!r}")
        if self.upstream_timeout <= 0:
            raise ConfigurationError("the upstream timeout must be positive")
        CallbackPolicy.build(self.allow_callback_hosts, public_url=self.public_url)  # refuses bad entries early

    @property
    def model_in_path_auth(self) -> Auth | None:
        """The credential for Kling's 2026 design (``/text-to-video/...``, ``/tasks``): an API key, since Kling
        answers a JWT there with 401/1002; ``None`` when only an access key pair is configured."""
        if isinstance(self.upstream_auth, APIKeyAuth):
            return self.upstream_auth
        return self.upstream_api_key_auth

    @property
    def upstream_auths(self) -> tuple[Auth, ...]:
        """Every real credential the gateway may send (to scrub from whatever Kling answers)."""
        extra = self.upstream_api_key_auth
        return (self.upstream_auth,) if extra is None or extra is self.upstream_auth else (self.upstream_auth, extra)

    @property
    def callback_url(self) -> str | None:
        """``<public_url>/callbacks/kling`` when a public URL is configured."""
        return None if self.public_url is None else self.public_url.rstrip("/") + CALLBACK_PATH


class GatewayState:
    """The objects one gateway process works with.

    Args:
        config: the configuration.
        tracker: an already opened tracker (tests); by default one is opened on ``config.db``.
    """

    def __init__(self, config: GatewayConfig, *, tracker: Any = None) -> None:
        from kling_budget.tracker import CostTracker

        self.config = config
        self.tracker: CostTracker = (
            tracker
            if tracker is not None
            else CostTracker(config.db, prices=config.prices, prices_overlay=config.prices_overlay)
        )
        self.ledger = self.tracker.ledger
        enable = getattr(self.ledger.backend, "enable_group_commit", None)
        if enable is not None:  # SQLite: concurrent creates share one fsync (see SQLiteBackend)
            enable()
        # Threads beyond the connection pool only queue for a connection and fight for the GIL (PostgreSQL);
        # SQLite's group-commit callers mostly wait on their batch, so more of them batch better.
        self._blocking = BlockingPool(64 if enable is not None else 8)
        self.prices = self.tracker.prices
        self.metrics = Metrics()
        box = load_master_key(home=config.home or data_dir())
        self.secret_box = box
        self.keys = KeyStore(self.ledger.backend, box, cache_seconds=config.key_cache_seconds)
        self.tasks = TaskStore(self.ledger.backend)
        self.upstream = Upstream(
            config.upstream_url,
            config.upstream_auth,
            timeout=config.upstream_timeout,
            metrics=self.metrics,
        )
        # Kling's 2026 design takes an API key only: its own connection when /v1 signs JWTs.
        self.model_in_path_upstream: Upstream | None = self.upstream
        api_key_auth = config.model_in_path_auth
        if api_key_auth is None:
            self.model_in_path_upstream = None
        elif api_key_auth is not config.upstream_auth:
            self.model_in_path_upstream = Upstream(
                config.upstream_url, api_key_auth, timeout=config.upstream_timeout, metrics=self.metrics
            )
        self.callback_policy = CallbackPolicy.build(
            config.allow_callback_hosts, public_url=config.public_url, listen_port=config.listen_port
        )
        base = config.callback_url
        self.callback_tokens = None if base is None else CallbackTokens.load(self.ledger.backend, box, base)

    def __repr__(self) -> str:
        return f"GatewayState(ledger={self.ledger.backend.display_url!r}, upstream={self.config.upstream_url!r})"

    async def run_sync(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking call (ledger, key store) in a worker thread and await its result."""
        return await self._blocking.run(fn, *args, **kwargs)

    def kling_client(self) -> Any:
        """A new :class:`~kling_budget.kling.AsyncKlingClient` with the real credentials (close it after use)."""
        from kling_budget.kling import AsyncKlingClient

        auth = self.config.upstream_auth
        if isinstance(auth, JWTAuth):
            return AsyncKlingClient(auth.access_key, auth._secret_key, base_url=self.config.upstream_url)
        if isinstance(auth, APIKeyAuth):
            return AsyncKlingClient(api_key=auth._api_key, base_url=self.config.upstream_url)
        raise ConfigurationError("the upstream credentials are of an unknown kind")

    def upstream_for(self, path: str) -> Upstream | None:
        """The connection to Kling for a create path (or ``/tasks``) of either design: the 2026 design's needs an
        API key, so it is ``None`` when only an access key pair is configured."""
        if path == TASKS_PATH or is_model_in_path(path):
            return self.model_in_path_upstream
        return self.upstream

    async def aclose(self) -> None:
        """Close the upstream connections and the ledger."""
        await self.upstream.aclose()
        if self.model_in_path_upstream is not None and self.model_in_path_upstream is not self.upstream:
            await self.model_in_path_upstream.aclose()
        self._blocking.close()
        self.tracker.close()
