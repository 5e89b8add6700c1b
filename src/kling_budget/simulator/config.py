"""Configuration of a simulated Kling deployment: accounts, credentials, resource packs and switches.

Everything here is a frozen value; :meth:`Simulator.configure` swaps in a changed copy at run time.
Units are exact (``"1000"``, ``Decimal("2.5")`` or an int), never floats; durations are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from kling_budget.errors import ConfigurationError, InvalidInputError
from kling_budget.money import parse_decimal, units_to_milli
from kling_budget.types import PackType

__all__ = [
    "CASH_TYPES",
    "CURRENCIES",
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET_KEY",
    "AccountConfig",
    "PackConfig",
    "SimulatorConfig",
    "parse_pack_type",
]

DEFAULT_ACCESS_KEY = "sim-access-key"
DEFAULT_SECRET_KEY = "sim-secret-key"
DEFAULT_API_KEY = "sim-api-key"

#: Currencies of a cash balance, as Kling reports them in ``billing[].currency``.
CURRENCIES = ("USD", "CNY")
#: Cash balances in the order a task draws on them: test money (测试金) first, then the real balance.
CASH_TYPES = ("test_balance", "balance")
# Kling publishes no CNY unit prices: a CNY account's default list price is the USD one times this.
_CNY_PER_USD = Decimal(7)

_PACK_ALIASES = {
    "video": PackType.VIDEO,
    "image": PackType.IMAGE,
    "try_on": PackType.TRY_ON,
    "try-on": PackType.TRY_ON,
}
_PACK_LABELS = {
    PackType.VIDEO: "Video Generation",
    PackType.IMAGE: "Image Generation",
    PackType.TRY_ON: "Virtual Try-On",
}


def parse_pack_type(value: str | PackType) -> PackType:
    """``"video"``, ``"image"``, ``"try_on"`` (or ``"try-on"``) as a :class:`PackType`."""
    if isinstance(value, PackType):
        return value
    try:
        return _PACK_ALIASES[value.strip().lower()]
    except KeyError:
        raise ConfigurationError(f"unknown pack type {value!r}; use video, image or try_on") from None


@dataclass(frozen=True, slots=True)
class PackConfig:
    """One prepaid resource pack.

    Attributes:
        pack_type: which jobs draw from it (video, image, try_on).
        total: units bought, exact (``"1000"``).
        remaining: units left at start; defaults to ``total``.
        concurrency: parallel-task quota this pack grants; the quota of a pack type is the largest quota
            among its online packs (Kling: packs of 5 and 10 give 10, not 15).
        name: ``resource_pack_name``; defaults to e.g. ``"Video Generation - 1,000 entries"``.
        resource_pack_type: ``"decreasing_total"`` or ``"constant_period"``.
        purchase_time_ms / effective_time_ms / invalid_time_ms: Unix ms; default to one day before the
            simulator starts (purchase, effective) and 90 days after it (invalid).
    """

    pack_type: PackType
    total: Decimal | int | str
    remaining: Decimal | int | str | None = None
    concurrency: int = 10
    name: str = ""
    resource_pack_type: str = "decreasing_total"
    purchase_time_ms: int | None = None
    effective_time_ms: int | None = None
    invalid_time_ms: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pack_type", parse_pack_type(self.pack_type))
        if self.total_milli < 0 or self.remaining_milli < 0 or self.remaining_milli > self.total_milli:
            raise ConfigurationError("a pack needs 0 <= remaining <= total units")
        if self.concurrency < 1:
            raise ConfigurationError("a pack's concurrency must be at least 1")
        if self.resource_pack_type not in ("decreasing_total", "constant_period"):
            raise ConfigurationError("resource_pack_type must be decreasing_total or constant_period")

    @property
    def total_milli(self) -> int:
        """``total`` in milli-units."""
        return units_to_milli(self.total, "pack total")

    @property
    def remaining_milli(self) -> int:
        """``remaining`` in milli-units."""
        if self.remaining is None:
            return self.total_milli
        return units_to_milli(self.remaining, "pack remaining")

    def display_name(self) -> str:
        """``name``, or Kling's style of default name."""
        if self.name:
            return self.name
        whole = int(Decimal(self.total_milli) / 1000)
        return f"{_PACK_LABELS[self.pack_type]} - {whole:,} entries"


def _default_packs() -> tuple[PackConfig, ...]:
    return (
        PackConfig(PackType.VIDEO, 1000),
        PackConfig(PackType.IMAGE, 10000),
        PackConfig(PackType.TRY_ON, 1000),
    )


def _money(value: Decimal | int | str, what: str) -> Decimal:
    try:
        amount = parse_decimal(value, what)
    except InvalidInputError as exc:
        raise ConfigurationError(str(exc)) from None
    if amount < 0:
        raise ConfigurationError(f"{what} must not be negative, got {value!r}")
    return amount


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One Kling account: its credentials, resource packs and (optionally) a cash balance.

    A task is paid from the packs of its type when they cover it, else from the cash balance (test money
    first) when that covers its discounted list price, else refused: 1101 on an account with a cash
    balance, 1102 on one without.

    Attributes:
        name: label used in inspection helpers and logs.
        key_pairs: ``(access_key, secret_key)`` pairs; each signs JWTs for this account (legacy ``/v1`` only).
        api_keys: plain API keys accepted as ``Authorization: Bearer <api key>`` on every route.
        api_key_names: the console name of each API key (``api_key_name`` in the billing ledgers); a key
            without one is named ``api-key-<n>`` by its position in ``api_keys``.
        packs: the account's resource packs.
        balance / test_balance: cash in ``currency`` (``None``: the account has no such balance).
        currency: ``"USD"`` or ``"CNY"``.
        discount: share of the list price taken off cash charges (``"0.25"``: a task listed at 0.84 costs 0.63).
        unit_prices: list price of one unit of each pack type in ``currency`` (``{"video": "0.14"}``);
            defaults to the packaged price table's USD prices, times 7 for CNY.
        cash_concurrency: parallel-task quota the cash balance grants (packs grant their own).
    """

    name: str = "default"
    key_pairs: tuple[tuple[str, str], ...] = ((DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY),)
    api_keys: tuple[str, ...] = ()
    packs: tuple[PackConfig, ...] = field(default_factory=_default_packs)
    api_key_names: Mapping[str, str] = field(default_factory=dict)
    balance: Decimal | int | str | None = None
    test_balance: Decimal | int | str | None = None
    currency: str = "USD"
    discount: Decimal | int | str = 0
    unit_prices: Mapping[str, Decimal | int | str] | None = None
    cash_concurrency: int = 10

    def __post_init__(self) -> None:
        if not self.key_pairs and not self.api_keys:
            raise ConfigurationError(f"account {self.name!r} needs an access/secret key pair or an API key")
        for access_key, secret_key in self.key_pairs:
            if not access_key or not secret_key:
                raise ConfigurationError("access and secret keys must not be empty")
        unknown = set(self.api_key_names) - set(self.api_keys)
        if unknown:
            raise ConfigurationError("api_key_names names a key that is not in api_keys")
        if self.currency not in CURRENCIES:
            raise ConfigurationError(f"currency must be one of {', '.join(CURRENCIES)}; got {self.currency!r}")
        if not 0 <= _money(self.discount, "discount") < 1:
            raise ConfigurationError(f"discount must be at least 0 and below 1, got {self.discount!r}")
        self.cash_balances()
        for pack_name, price in (self.unit_prices or {}).items():
            parse_pack_type(pack_name)
            _money(price, f"unit price of {pack_name}")
        if self.cash_concurrency < 1:
            raise ConfigurationError("cash_concurrency must be at least 1")

    def cash_balances(self) -> dict[str, Decimal]:
        """The configured cash balances by ``cash_type``, in drawing order (test money first)."""
        given = {"test_balance": self.test_balance, "balance": self.balance}
        balances: dict[str, Decimal] = {}
        for kind in CASH_TYPES:
            amount = given[kind]
            if amount is not None:
                balances[kind] = _money(amount, kind)
        return balances

    def api_key_name(self, api_key: str) -> str:
        """The console name of one of this account's API keys."""
        return self.api_key_names.get(api_key) or f"api-key-{self.api_keys.index(api_key) + 1}"

    def unit_price(self, pack_type: PackType, usd_prices: Mapping[PackType, Decimal]) -> Decimal:
        """List price of one unit of ``pack_type`` in the account's currency."""
        for name, price in (self.unit_prices or {}).items():
            if parse_pack_type(name) is pack_type:
                return _money(price, f"unit price of {name}")
        usd = usd_prices[pack_type]
        return usd if self.currency == "USD" else usd * _CNY_PER_USD


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated Kling behaves.

    Attributes:
        accounts: the accounts; the first one's credentials are the defaults handed to tests (by default one
            account with the key pair ``sim-access-key``/``sim-secret-key`` and the API key ``sim-api-key``).
        webhook_secret: ``whsec_...``; when set, callbacks carry Standard Webhooks signature headers.
        queued_seconds: time a task stays ``submitted``.
        running_seconds: time a task stays ``processing`` before it ends.
        report_billing: add the new design's ``billing[]`` to query results and callbacks.
        new_status_names: report ``succeeded`` (new design) instead of ``succeed`` (legacy).
        pending_deduction: ``final_unit_deduction`` of a task that has not ended (``None`` omits the field).
        costs_lag_seconds: ``/account/costs`` shows remaining units as of this long ago (Kling: 12 h).
        costs_min_interval_seconds: calls to ``/account/costs`` closer together than this get 1302
            (Kling asks for QPS <= 1; 0 disables).
        rate_limit_per_second: requests per account per clock second before 1302 (``None`` disables).
        jwt_leeway_seconds: tolerance on ``nbf``/``exp``.
        external_id_query: also answer ``GET <create path>?external_task_id=...`` with the single task.
        strict_video_refs: ``video_id`` in video-extend / lip-sync must name a video this account generated.
        prompt_markers: honour ``[sim:fail]``-style markers in prompts (see :class:`~.scripting.Script`).
        failure_probability / seed: fail this share of tasks at random, reproducibly.
        callback_on_submit: also call back for the initial ``submitted`` status.
        callback_retries / callback_timeout_seconds: attempts after the first, and the per-attempt timeout.
        media_base_url: prefix of the result URLs handed out.
        unpriced_units: charge for a request Kling accepts but the pricing module cannot price (effects
            templates, for one); ``None`` refuses such requests with 1201/1203 instead.
        retention_seconds: forget tasks this long after they end (their ids and external ids too), to bound
            memory in long benchmarks; ``None`` keeps every task (Kling keeps results 30 days).
        extra_models: model names accepted on every ``/v1`` endpoint that takes ``model_name``, beyond the
            built-in lists: a model Kling released after this simulator (e.g. ``kling-v4``); pass a ``pricer``
            that prices it, or it is charged ``unpriced_units``.
    """

    accounts: tuple[AccountConfig, ...] = (AccountConfig(api_keys=(DEFAULT_API_KEY,)),)
    webhook_secret: str | None = None
    queued_seconds: float = 0.2
    running_seconds: float = 0.5
    report_billing: bool = False
    new_status_names: bool = False
    pending_deduction: str | None = "0"
    costs_lag_seconds: float = 0.0
    costs_min_interval_seconds: float = 0.0
    rate_limit_per_second: int | None = None
    jwt_leeway_seconds: int = 0
    external_id_query: bool = True
    strict_video_refs: bool = True
    prompt_markers: bool = True
    failure_probability: float = 0.0
    seed: int | None = None
    callback_on_submit: bool = True
    callback_retries: int = 0
    callback_timeout_seconds: float = 5.0
    media_base_url: str = "https://media.kling-simulator.invalid"
    unpriced_units: Decimal | int | str | None = 1
    retention_seconds: float | None = None
    extra_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ConfigurationError("the simulator needs at least one account")
        if self.queued_seconds < 0 or self.running_seconds < 0:
            raise ConfigurationError("task timings must not be negative")
        if not 0 <= self.failure_probability <= 1:
            raise ConfigurationError("failure_probability must be between 0 and 1")
        if self.webhook_secret is not None and not self.webhook_secret.startswith("whsec_"):
            raise ConfigurationError("a webhook secret looks like whsec_<base64>")
        if self.unpriced_units is not None:
            units_to_milli(self.unpriced_units, "unpriced_units")
        seen: set[str] = set()
        for account in self.accounts:
            keys = [ak for ak, _ in account.key_pairs] + list(account.api_keys)
            if seen.intersection(keys):
                raise ConfigurationError("an access key or API key belongs to two accounts")
            seen.update(keys)

    @classmethod
    def single(
        cls,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        api_keys: tuple[str, ...] = (DEFAULT_API_KEY,),
        packs: Mapping[str, Decimal | int | str] | None = None,
        concurrency: Mapping[str, int] | int | None = None,
        api_key_names: Mapping[str, str] | None = None,
        balance: Decimal | int | str | None = None,
        test_balance: Decimal | int | str | None = None,
        currency: str = "USD",
        discount: Decimal | int | str = 0,
        **options: object,
    ) -> SimulatorConfig:
        """One account with these credentials and packs (``{"video": "1000"}``); other options as keywords.

        ``concurrency`` is one quota for every pack or a quota per pack type (default 10). ``balance``,
        ``test_balance``, ``currency`` and ``discount`` give the account a cash balance (see
        :class:`AccountConfig`); ``packs={}`` makes it a cash-only account.
        """
        pack_units = packs if packs is not None else {"video": 1000, "image": 10000, "try_on": 1000}
        pack_configs = []
        for pack_name, units in pack_units.items():
            pack_type = parse_pack_type(pack_name)
            if isinstance(concurrency, int):
                quota = concurrency
            elif concurrency is None:
                quota = 10
            else:
                by_type = {parse_pack_type(k): v for k, v in concurrency.items()}
                quota = by_type.get(pack_type, 10)
            pack_configs.append(PackConfig(pack_type, units, concurrency=quota))
        account = AccountConfig(
            key_pairs=((access_key, secret_key),),
            api_keys=tuple(api_keys),
            packs=tuple(pack_configs),
            api_key_names=dict(api_key_names or {}),
            balance=balance,
            test_balance=test_balance,
            currency=currency,
            discount=discount,
        )
        return cls(accounts=(account,), **options)  # type: ignore[arg-type]
