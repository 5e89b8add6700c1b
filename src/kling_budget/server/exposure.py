"""What the gateway shows, and to whom: ``/metrics`` access, denials seen by a tenant, Kling's errors passed on.

* ``/metrics`` is served to loopback clients only, unless ``KLING_BUDGET_METRICS_TOKEN`` is set (then a
  matching ``Authorization: Bearer`` is required from anywhere) or ``serve --public-metrics`` opens it.
* A denial by a budget the tenant's key owns (scoped to its project, its user or the key itself) names the
  limit, committed, held and reset time; a denial by a wider budget (the whole account, a tag, a model, another
  scope) says only which budget refused and when it resets, never the account's totals.
* A Kling error passed through to a client is scrubbed of the gateway's real credentials: the secret key or
  API key, the access key, every token it signed and every segment of one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request

from kling_budget.budgets import Budget
from kling_budget.kling.auth import Auth, JWTAuth
from kling_budget.server.keys import VirtualKey
from kling_budget.server.state import GatewayConfig
from kling_budget.types import Denial

__all__ = ["metrics_allowed", "owns_budget", "scrub_upstream_error", "tenant_denial_message"]

_REDACTED = "[REDACTED]"
_MIN_SEGMENT = 8


def metrics_allowed(request: Request, config: GatewayConfig) -> bool:
    """Whether this request may read ``/metrics`` (see the module docstring)."""
    if config.metrics_token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and config.metrics_token.matches(given.strip())
    if config.public_metrics:
        return True
    client = request.client
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return False


def owns_budget(key: VirtualKey, budget: Budget) -> bool:
    """Whether ``budget`` only counts this key's own jobs: scoped to its project, its user or the key itself."""
    scope = budget.scope
    return (
        (bool(scope.project) and scope.project == key.project)
        or (bool(scope.api_key) and scope.api_key == key.name)
        or (bool(scope.user) and bool(key.user) and scope.user == key.user)
    )


def tenant_denial_message(denial: Denial, budget: Budget | None, key: VirtualKey) -> str:
    """The denial as the tenant may see it: the full figures for its own budget, else no totals at all."""
    if budget is not None and owns_budget(key, budget):
        return f"request denied: {denial.message()}"
    reset = denial.reset_at.isoformat() if denial.reset_at else "never (total budget)"
    return (
        f"request denied: budget '{denial.budget}' ({denial.period}, set by the gateway's operator over more than "
        f"this key's project) has no room for this request; resets {reset}"
    )


def _sensitive(auth: Auth) -> list[str]:
    """The access key, and every token the gateway signed with its segments (the longest first)."""
    found: list[str] = []
    if isinstance(auth, JWTAuth):
        found.append(auth.access_key)
        for token in getattr(auth, "_tokens", ()):
            found.append(token)
            found.extend(part for part in token.split(".") if len(part) >= _MIN_SEGMENT)
    return sorted({s for s in found if s}, key=len, reverse=True)


def _scrub_text(text: str, auth: Auth, sensitive: list[str]) -> str:
    text = auth.redact(text)
    for secret in sensitive:
        text = text.replace(secret, _REDACTED)
    return text


def scrub_upstream_error(envelope: dict[str, Any], auth: Auth) -> dict[str, Any]:
    """A copy of Kling's error envelope with ``data`` dropped and every credential scrubbed from the rest."""
    sensitive = _sensitive(auth)

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return _scrub_text(value, auth, sensitive)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    shown = {key: clean(value) for key, value in envelope.items() if key != "data"}
    shown["data"] = None
    return shown
