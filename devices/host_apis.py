"""``/api/hosts``: the GPU hosts (list for users, add and revoke for staff) and the two
endpoints an agent calls with no user session: ``join`` (one-time join token -> credential)
and ``report`` (its GPUs and labelled services, with its credential as a Bearer token)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api_errors import ApiErrorSerializer
from common.apis import StrictSerializer
from devices.hosts import (
    AgentRefused,
    agent_command,
    host_add,
    host_authenticate,
    host_by_name,
    host_join,
    host_new_join_token,
    host_report_record,
    host_revoke,
    host_state,
    report_containers,
    report_parse,
)
from devices.models import Host

_error = ApiErrorSerializer
_REFUSALS = {400: _error, 401: _error, 403: _error, 404: _error}


class HostSerializer(serializers.Serializer[Host]):
    name = serializers.CharField()
    local = serializers.BooleanField(source="is_local")
    state = serializers.SerializerMethodField(
        help_text="joining | online | offline | maintenance | revoked"
    )
    since = serializers.SerializerMethodField(help_text="Offline: when it was last heard from.")
    agent_version = serializers.CharField()
    last_heartbeat_at = serializers.DateTimeField(allow_null=True)
    queue = serializers.SerializerMethodField(help_text="The Celery queue its agent consumes.")
    gpus = serializers.SerializerMethodField(help_text="The global indexes of its GPUs.")
    services = serializers.SerializerMethodField(help_text="Labelled services it defines.")

    def get_state(self, host: Host) -> str:
        return host_state(host).label

    def get_since(self, host: Host) -> str | None:
        since = host_state(host).since
        return None if since is None else since.isoformat()

    def get_queue(self, host: Host) -> str | None:
        return None if host.is_local else host.queue

    def get_gpus(self, host: Host) -> list[int]:
        return [gpu.gpu_index for gpu in host.gpus.all() if gpu.present]

    def get_services(self, host: Host) -> list[str]:
        return [service.service_name for service in host.services.all()]


def _hosts() -> Any:
    return Host.objects.prefetch_related("gpus", "services")


class HostAddSerializer(StrictSerializer):
    name = serializers.CharField(max_length=63, help_text="lowercase letters, digits, hyphens")


class HostListApi(APIView):
    """Every GPU host (GET, any user); add one (POST, staff): the answer holds the one-time
    join token and the command that starts its agent, shown this once."""

    @extend_schema(responses={200: HostSerializer(many=True), 403: _error})
    def get(self, request: Request) -> Response:
        return Response(HostSerializer(_hosts(), many=True).data)

    @extend_schema(request=HostAddSerializer, responses={201: HostSerializer, **_REFUSALS})
    def post(self, request: Request) -> Response:
        body = HostAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        host, token = host_add(body.validated_data["name"])
        url = request.build_absolute_uri("/")
        return Response(
            {
                **HostSerializer(host).data,
                "join_token": token,
                "agent_command": agent_command(host, token, url),
            },
            status=201,
        )


class HostRevokeApi(APIView):
    """Revoke a host's credential (staff): refused everywhere from now on."""

    @extend_schema(request=None, responses={200: HostSerializer, **_REFUSALS})
    def post(self, request: Request, name: str) -> Response:
        host = host_by_name(name)
        host_revoke(host)
        return Response(HostSerializer(host).data)


class HostJoinTokenApi(APIView):
    """A new one-time join token for a host whose agent has not joined yet (staff)."""

    @extend_schema(request=None, responses={200: HostSerializer, **_REFUSALS})
    def post(self, request: Request, name: str) -> Response:
        host = host_by_name(name)
        token = host_new_join_token(host)
        return Response(
            {
                **HostSerializer(host).data,
                "join_token": token,
                "agent_command": agent_command(host, token, request.build_absolute_uri("/")),
            }
        )


# --- the agent's side --------------------------------------------------------------


class HostCredentialAuthentication(BaseAuthentication):
    """``Authorization: Bearer gch_...``: the request speaks for that host, and only it."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, Host] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise AuthenticationFailed("Authorization: Bearer <host credential>, one token.")
        try:
            host = host_authenticate(header[1].decode("ascii", "replace"))
        except AgentRefused as refused:
            raise AuthenticationFailed(refused.user_message) from None
        return AnonymousUser(), host

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="gpuconfig-host"'


# drf-spectacular registers extensions in an untyped __init_subclass__.
class HostCredentialScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The schema's name for a host's credential (registered when this module is imported)."""

    target_class = HostCredentialAuthentication
    name = "hostCredential"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(
            header_name="Authorization",
            token_prefix="Bearer",  # noqa: S106 (the scheme's word, not a secret)
            bearer_format="gch_...",
        )


class IsHostAgent(BasePermission):
    message = "Only a host's agent, with its credential, may report."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, Host)


class JoinSerializer(StrictSerializer):
    token = serializers.CharField(max_length=128)
    agent_version = serializers.CharField(max_length=64, allow_blank=True, required=False)


class HostJoinApi(APIView):
    """An agent exchanges its one-time join token for the host's credential (no login)."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=JoinSerializer, responses={200: HostSerializer, 400: _error, 401: _error}
    )
    def post(self, request: Request) -> Response:
        body = JoinSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        host, credential = host_join(
            body.validated_data["token"], agent_version=body.validated_data.get("agent_version", "")
        )
        return Response(
            {**HostSerializer(host).data, "credential": credential, "queue": host.queue}
        )


class HostReportApi(APIView):
    """An agent reports its host's GPUs (by UUID, with the index there) and the labelled
    services of its compose file; GPU Config stores them for that host only."""

    authentication_classes = [HostCredentialAuthentication]
    permission_classes = [IsHostAgent]

    @extend_schema(request=None, responses={200: HostSerializer, 400: _error, 401: _error})
    def post(self, request: Request) -> Response:
        host = request.auth
        assert isinstance(host, Host)  # IsHostAgent
        gpus, services, version = report_parse(request.data)
        containers = report_containers(request.data, services)
        host_report_record(host, gpus, services, agent_version=version, containers=containers)
        return Response(HostSerializer(_hosts().get(pk=host.pk)).data)
