"""Where the gateway may send a tenant's callbacks: the ``callback_url`` checks that keep it from being an SSRF proxy.

A tenant's ``callback_url`` is checked when the create arrives and again before every delivery (a name may
resolve elsewhere by then: DNS rebinding):

* **syntax** — ``http``/``https``, a host, at most :data:`MAX_URL_LENGTH` ASCII characters, no spaces, control
  characters (CR, LF, NUL …), backslashes or credentials (``user@``);
* **address** — every address the host resolves to must be public: loopback, private (RFC 1918, unique local),
  link-local (cloud metadata at ``169.254.169.254``), shared, multicast, reserved and unspecified addresses are
  refused, unless the operator allows the host name or a network containing the address
  (``serve --allow-callback-host``);
* **not the gateway** — a URL on the gateway's own public host and port, or on a local address at the port it
  listens on, is refused whatever is allowed: a callback to itself would loop.

Name resolution runs in a worker thread with a timeout (:data:`RESOLVE_TIMEOUT_SECONDS`), never on the event
loop. A delivery connects to the address that was checked (the host name still goes in ``Host`` and TLS SNI),
so a second resolution cannot slip in another address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from kling_budget.errors import ConfigurationError
from kling_budget.numeric import shown

__all__ = [
    "MAX_URL_LENGTH",
    "RESOLVE_TIMEOUT_SECONDS",
    "CallbackPolicy",
    "CallbackTarget",
    "CallbackURLError",
    "parse_callback_url",
]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 3.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORBIDDEN = frozenset(" \\\x7f") | frozenset(chr(c) for c in range(32))


class CallbackURLError(ValueError):
    """A ``callback_url`` the gateway will not call; the message says why and what is accepted."""


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A syntactically valid callback URL, split.

    Attributes:
        url: the URL as given.
        scheme: ``http`` or ``https``.
        host: the host name or address, lower case, without brackets.
        port: the port (80/443 by default).
    """

    url: str
    scheme: str
    host: str
    port: int


def parse_callback_url(url: object) -> CallbackTarget:
    """Check a ``callback_url``'s syntax (see the module docstring).

    Raises:
        CallbackURLError: not a URL the gateway accepts.
    """
    if not isinstance(url, str):
        raise CallbackURLError(f"callback_url must be a string, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackURLError(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c in _FORBIDDEN for c in url):
        raise CallbackURLError(
            "callback_url may contain only printable ASCII characters: no spaces, CR, LF, NUL or other control "
            "characters, no backslashes (percent-encode them; write international host names in punycode)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackURLError(f"callback_url {shown(url)} is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackURLError(f"callback_url must be an http:// or https:// URL, got {shown(url)}")
    if "@" in parts.netloc:
        raise CallbackURLError("callback_url must not carry credentials (user@host); put a token in the path")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackURLError(f"callback_url {shown(url)} has no host")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return CallbackTarget(url=url, scheme=parts.scheme, host=host.lower(), port=port)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _local(address: IPAddress) -> bool:
    """Whether ``address`` belongs to this host (binding to it succeeds only then)."""
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """The operator's callback settings: what is allowed besides public addresses, and what the gateway itself is.

    Attributes:
        allowed_hosts: host names (lower case) whose addresses are accepted whatever they are.
        allowed_networks: networks whose addresses are accepted although not public.
        own_endpoints: (host, port) pairs that are this gateway (its public URL).
        listen_port: the port this gateway listens on (a local address at this port is itself).
        resolve_timeout: seconds a name resolution may take.
    """

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    own_endpoints: frozenset[tuple[str, int]] = frozenset()
    listen_port: int | None = None
    resolve_timeout: float = RESOLVE_TIMEOUT_SECONDS

    @classmethod
    def build(
        cls, allowed: Iterable[str] = (), *, public_url: str | None = None, listen_port: int | None = None
    ) -> CallbackPolicy:
        """A policy from ``--allow-callback-host`` values (host names, addresses or CIDR networks).

        Raises:
            ConfigurationError: an entry that is neither.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allowed:
            text = entry.strip().lower().rstrip(".")
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not all(part and all(c.isalnum() or c in "-_" for c in part) for part in text.split(".")):
                raise ConfigurationError(
                    f"--allow-callback-host {shown(entry)} is not a host name, an address or a network like 10.0.0.0/8"
                )
            hosts.add(text)
        own: set[tuple[str, int]] = set()
        if public_url:
            try:
                target = parse_callback_url(public_url)
            except CallbackURLError as exc:
                raise ConfigurationError(f"--public-url: {exc}") from None
            own.add((target.host, target.port))
        return cls(frozenset(hosts), tuple(networks), frozenset(own), listen_port)

    def _allowed(self, address: IPAddress) -> bool:
        return _public(address) or any(address in network for network in self.allowed_networks)

    async def resolve(self, target: CallbackTarget) -> list[str]:
        """The addresses to connect to for ``target``, every one checked; raises :class:`CallbackURLError`."""
        if (target.host, target.port) in self.own_endpoints:
            raise CallbackURLError("callback_url points at this gateway itself; give your own server's URL")
        literal = _address(target.host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                with anyio.fail_after(self.resolve_timeout):
                    infos = await anyio.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except TimeoutError:
                raise CallbackURLError(f"callback_url host {shown(target.host)} did not resolve in time") from None
            except OSError:
                raise CallbackURLError(f"callback_url host {shown(target.host)} does not resolve") from None
            found = [_address(str(info[4][0])) for info in infos]
            addresses = list(dict.fromkeys(a for a in found if a is not None))
            if not addresses:
                raise CallbackURLError(f"callback_url host {shown(target.host)} does not resolve")
        named = literal is None and target.host in self.allowed_hosts
        for address in addresses:
            if self.listen_port is not None and target.port == self.listen_port and _local(address):
                raise CallbackURLError("callback_url points at this gateway itself; give your own server's URL")
            if not named and not self._allowed(address):
                raise CallbackURLError(
                    f"callback_url host {shown(target.host)} resolves to {address}, a loopback, private, link-local "
                    "or otherwise non-public address; the gateway only calls public addresses unless its operator "
                    "allows the host (serve --allow-callback-host)"
                )
        return [str(a) for a in addresses]
