"""URL map: settings pages, the API under /api/system/, the admin, and login."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from orchestration import metrics_views
from pages import views as page_views


@login_not_required
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    # Resolved per request, not at import: with hashed static names the manifest exists only
    # after collectstatic, and `manage.py check --deploy` must load the URLs without it.
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("", page_views.home, name="home"),
    path("health", page_views.health, name="health"),
    path("metrics", metrics_views.metrics, name="metrics"),  # Prometheus (docs/metrics.md)
    # Browsers ask for /favicon.ico whatever the page's <link rel="icon"> says.
    path("favicon.ico", favicon),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("settings/", include("pages.urls")),
    path("api/", include("config.api_urls")),
]
