"""``GET /metrics``: Prometheus text format, for a scraper with the token or from an allowed
network (docs/configuration.md: GPUCONFIG_METRICS_TOKEN, GPUCONFIG_METRICS_ALLOWED_NETWORKS)."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from common.client_address import client_ip_address, trusted_networks
from orchestration.metrics import GpuConfigCollector


def _token_matches(request: HttpRequest) -> bool:
    token = settings.GPUCONFIG_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _from_allowed_network(request: HttpRequest) -> bool:
    networks = trusted_networks(tuple(settings.GPUCONFIG_METRICS_ALLOWED_NETWORKS))
    try:
        address = ipaddress.ip_address(client_ip_address(request))
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in networks)


@login_not_required  # a scraper has no session: the token or its address lets it in
@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.GPUCONFIG_METRICS_TOKEN and not settings.GPUCONFIG_METRICS_ALLOWED_NETWORKS:
        raise Http404("Metrics are off: set GPUCONFIG_METRICS_TOKEN or ..._ALLOWED_NETWORKS.")
    if not (_token_matches(request) or _from_allowed_network(request)):
        response = HttpResponse(
            "Metrics need the token (Authorization: Bearer <GPUCONFIG_METRICS_TOKEN>) or an "
            "address in GPUCONFIG_METRICS_ALLOWED_NETWORKS.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuConfigCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
