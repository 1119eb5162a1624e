"""The DRF API under /api/.

DRF authenticates sessions *and* tokens itself, so the product's API views opt out of
LoginRequiredMiddleware (which only knows sessions and would redirect a token client to the
login page) and rely on DRF permissions instead: anonymous callers get 403, never data.
"""

from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required, login_required
from django.urls import path
from django.views.decorators.cache import never_cache
from drf_spectacular.views import SpectacularAPIView
from rest_framework.views import APIView

from config.api_root import ApiRootView
from devices import host_apis, maintenance_apis
from gpuconfig import apis as gpuconfig_apis
from gpuconfig import backup_apis as gpuconfig_backup_apis
from gpuconfig import gpu_apis, headroom_apis
from gpuconfig.api_docs import ApiDocsView
from orchestration import apis as orchestration_apis


def _api(view: type[APIView]) -> Callable[..., Any]:
    # no-store: answers describe live state and who may see it; no cache may keep them.
    return never_cache(login_not_required(view.as_view()))


urlpatterns = [
    # The browsable API's root: every endpoint, by name.
    path("", _api(ApiRootView), name="api-root"),
    # The inventory with what each GPU really runs: composed above devices (orchestration).
    path("system/gpus", _api(orchestration_apis.GpuListApi), name="api-gpus"),
    # GPU hosts: list and add (staff), revoke, a new join token; an agent's join and report.
    path("hosts", _api(host_apis.HostListApi), name="api-hosts"),
    path("hosts/join", _api(host_apis.HostJoinApi), name="api-host-join"),
    path("hosts/report", _api(host_apis.HostReportApi), name="api-host-report"),
    path("hosts/<str:name>/revoke", _api(host_apis.HostRevokeApi), name="api-host-revoke"),
    path(
        "hosts/<str:name>/join-token", _api(host_apis.HostJoinTokenApi), name="api-host-join-token"
    ),
    path("system/gpus/headroom", _api(headroom_apis.HeadroomApi), name="api-gpus-headroom"),
    path(
        "system/gpus/<str:gpu_index>/maintenance",
        _api(maintenance_apis.GpuMaintenanceApi),
        name="api-gpu-maintenance",
    ),
    path(
        "system/gpus/<str:gpu_index>/drain",
        _api(maintenance_apis.GpuDrainApi),
        name="api-gpu-drain",
    ),
    path(
        "system/gpus/suggested-estimates",
        _api(gpu_apis.SuggestedEstimatesApi),
        name="api-gpus-suggested-estimates",
    ),
    path("system/gpu-config", _api(gpuconfig_apis.GpuConfigApi), name="api-gpu-config"),
    path("system/gpu-config/detect", _api(gpu_apis.GpuDetectApi), name="api-detect"),
    path(
        "system/gpu-config/preview",
        _api(gpuconfig_apis.GpuConfigPreviewApi),
        name="api-gpu-config-preview",
    ),
    path(
        "system/gpu-config/versions",
        _api(gpuconfig_apis.ConfigVersionListApi),
        name="api-gpu-config-versions",
    ),
    path("system/gpu-config/apply", _api(orchestration_apis.ApplyApi), name="api-apply"),
    path("system/gpu-config/rollback", _api(orchestration_apis.RollbackApi), name="api-rollback"),
    path("system/gpu-config/status", _api(orchestration_apis.StatusApi), name="api-status"),
    path(
        "system/gpu-config/export",
        _api(gpuconfig_backup_apis.GpuConfigExportApi),
        name="api-gpu-config-export",
    ),
    path(
        "system/gpu-config/import",
        _api(gpuconfig_backup_apis.GpuConfigImportApi),
        name="api-gpu-config-import",
    ),
    # The schema: any logged-in user, by session or token (SERVE_PERMISSIONS), else 403.
    path("schema", never_cache(SpectacularAPIView.as_view()), name="api-schema"),
    # Swagger UI: DRF views opt out of LoginRequiredMiddleware, so the login is asked here
    # (anonymous browsers go to the login page, as everywhere else).
    path("docs", login_required(ApiDocsView.as_view(url_name="api-schema")), name="api-docs"),
]
