"""The client's address, from the one header only a trusted proxy sets.

Behind the stack's reverse proxy every request reaches gunicorn from the proxy (or the
podman gateway), so REMOTE_ADDR names the same host for everyone: a lockout keyed on it
locks the admin out for all. The proxy replaces X-Forwarded-For with the address it saw.
Only a request that comes *from* one of GPUCONFIG_TRUSTED_PROXIES is believed; anyone else
could write the header themselves, so theirs is ignored.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def trusted_networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    """GPUCONFIG_TRUSTED_PROXIES as networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _parsed(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket: compare and store it as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[Network, ...]
) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_ip_address(request: HttpRequest) -> str:
    """The address to count login failures against (django-axes' AXES_CLIENT_IP_CALLABLE).

    REMOTE_ADDR, unless it is a trusted proxy: then the right-most X-Forwarded-For entry
    that is not itself a trusted proxy. Right-most, because a proxy appends what it saw
    after whatever the client sent; everything left of the last untrusted hop is the
    client's own claim.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    networks = trusted_networks(tuple(settings.GPUCONFIG_TRUSTED_PROXIES))
    remote_address = _parsed(remote)
    if remote_address is None or not networks or not _is_trusted(remote_address, networks):
        return str(remote_address) if remote_address is not None else remote
    client = remote_address
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for entry in reversed(forwarded.split(",") if forwarded else []):
        hop = _parsed(entry)
        if hop is None:
            break  # a malformed entry: nothing left of it can be trusted
        client = hop
        if not _is_trusted(hop, networks):
            break
    return str(client)
