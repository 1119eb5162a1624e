"""Settings for GPU Config, read from the environment (see docs/configuration.md).

Embedded defaults need no server: SQLite and a filesystem Celery broker under ``.data/``.
Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).

Loading these settings only reads: it writes no file and creates no folder. What the
embedded defaults keep under ``.data/`` (the secret key, the SQLite file, the broker's
folders) is created by ``manage.py prepare_data_dir``, which ``bin/run`` and the image's
entrypoint run first; the system checks name whatever is missing (common/data_dir.py).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from common.files import read_or_none
from common.sqlite import ExistingDatabaseConnection
from config.env import envbool, envchoice, envfloat, envint, envlist, envstr
from config.production import refuse_embedded_defaults

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("GPUCONFIG_DATA_DIR", str(BASE_DIR / ".data")))

# Production mode (the stack sets it): refuse the embedded defaults, so that a forgotten
# variable stops the app instead of falling back to files inside a container
# (config/production.py).
GPUCONFIG_PRODUCTION = envbool("GPUCONFIG_PRODUCTION", False)
DEBUG = envbool("DJANGO_DEBUG", False)
if GPUCONFIG_PRODUCTION:
    refuse_embedded_defaults(os.environ, debug=DEBUG)

# Embedded default: one random key per installation, kept in the data folder beside the
# SQLite database, so sessions survive restarts without anyone having to invent a secret.
# `manage.py prepare_data_dir` writes it on first start (0600 in a 0700 folder); until then
# the key is empty and the system checks say so.
_secret_key = envstr("DJANGO_SECRET_KEY", "")
_secret_key_file = DATA_DIR / "secret-key"
GPUCONFIG_SECRET_KEY_FILE: Path | None = None if _secret_key else _secret_key_file
SECRET_KEY = _secret_key or (read_or_none(_secret_key_file) or "").strip()
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS and security headers (docs/configuration.md, "Production") ---------------------
# GPUCONFIG_HTTPS says whether browsers reach the app over HTTPS (normally through a
# TLS-terminating proxy). It switches the group that only works over HTTPS: secure-only
# cookies, the redirect to https:// and HSTS. It defaults to on in production mode; a stack
# reached over plain HTTP on a LAN sets GPUCONFIG_HTTPS=0, because browsers never send a
# Secure cookie back over HTTP and nobody could log in.
GPUCONFIG_HTTPS = envbool("GPUCONFIG_HTTPS", GPUCONFIG_PRODUCTION)
SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", GPUCONFIG_HTTPS)
# Container health checks call /health over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SESSION_COOKIE_SECURE = envbool("DJANGO_SESSION_COOKIE_SECURE", GPUCONFIG_HTTPS)
CSRF_COOKIE_SECURE = envbool("DJANGO_CSRF_COOKIE_SECURE", GPUCONFIG_HTTPS)
SECURE_HSTS_SECONDS = envint(
    "DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if GPUCONFIG_HTTPS else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool("DJANGO_SECURE_HSTS_PRELOAD", True)
# Trust the proxy's X-Forwarded-Proto only when told to: without a proxy that overwrites it,
# any client could claim HTTPS. The value is the header's name, e.g. X-Forwarded-Proto.
_proxy_ssl_header = envstr("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
SECURE_CONTENT_TYPE_NOSNIFF = envbool("DJANGO_SECURE_CONTENT_TYPE_NOSNIFF", True)
SECURE_REFERRER_POLICY = envstr("DJANGO_SECURE_REFERRER_POLICY", "same-origin")
SECURE_CROSS_ORIGIN_OPENER_POLICY = envchoice(
    "DJANGO_SECURE_CROSS_ORIGIN_OPENER_POLICY",
    "same-origin",
    ["same-origin", "same-origin-allow-popups", "unsafe-none"],
)
SESSION_COOKIE_HTTPONLY = envbool("DJANGO_SESSION_COOKIE_HTTPONLY", True)
X_FRAME_OPTIONS = envchoice("DJANGO_X_FRAME_OPTIONS", "DENY", ["DENY", "SAMEORIGIN"])
# Over plain HTTP these four `check --deploy` warnings describe the operator's stated choice
# (GPUCONFIG_HTTPS=0), not a mistake; every other deployment check stays on.
SILENCED_SYSTEM_CHECKS = (
    [] if GPUCONFIG_HTTPS else ["security.W004", "security.W008", "security.W012", "security.W016"]
)
# Content-Security-Policy (Django's own): scripts only from this origin or with the
# per-response nonce (django-htmx's {% htmx_script %} uses it); no plugins, no framing.
# style-src-attr allows the width of the usage bars (style="width: N%" in the templates).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "style-src-attr": [CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

INSTALLED_APPS = [
    # Before staticfiles: runserver then serves static files through whitenoise too, as
    # gunicorn does in production, instead of through its own handler.
    "whitenoise.runserver_nostatic",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served here instead of from a CDN
    "django_htmx",
    "common",  # the checks and `manage.py prepare_data_dir` for the data folder
    "devices",
    "gpuconfig",
    "orchestration",
    "pages",  # the Settings pages, above gpuconfig and orchestration
    "axes",  # the login lockout (see "Logging in" below)
]

MIDDLEWARE = [
    # First of all: every body over its limit is refused before anything reads it
    # (common/request_limits.py; the limits under "Request bodies" below).
    "common.request_limits.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",  # SECURE_CSP above
    # Static files are served by the app itself (no proxy in the stack); right after the
    # security middleware so they skip sessions and the login requirement.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Login everywhere: views opt out explicitly with @login_not_required (login page,
    # health endpoint, and the DRF views, which authenticate sessions *and* tokens themselves).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # csp_nonce for <script> tags (SECURE_CSP above).
                "django.template.context_processors.csp",
            ],
        },
    },
]

_DEFAULT_DATABASE_URL = f"sqlite:///{DATA_DIR / 'gpuconfig.sqlite3'}"
try:
    DATABASES = {
        "default": dj_database_url.parse(
            envstr("DATABASE_URL", _DEFAULT_DATABASE_URL), conn_max_age=60, conn_health_checks=True
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Name the connections so pg_stat_activity shows which are the app's.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "application_name", envstr("GPUCONFIG_DB_APPLICATION_NAME", "gpuconfig")
    )
    # One psycopg pool per process bounds its connections, however many threads ask:
    # the default maximum is one per gunicorn thread, so a worker never waits on its pool,
    # and the total stays workers x threads (+ the Celery worker) whatever the client count.
    _pool_max = envint("GPUCONFIG_DB_POOL_MAX", envint("GUNICORN_THREADS", 8, minimum=1), minimum=0)
    if _pool_max:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": min(envint("GPUCONFIG_DB_POOL_MIN", 1, minimum=0), _pool_max),
            "max_size": _pool_max,
            # A request that cannot get a connection this long fails instead of piling up.
            "timeout": envfloat("GPUCONFIG_DB_POOL_TIMEOUT", 10.0, minimum=0.1),
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections, not Django
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The database holds sessions and API tokens: `manage.py prepare_data_dir` creates the
    # file 0600 in a 0700 folder before SQLite first opens it (an empty file is an empty
    # database; SQLite gives its journals the same mode).
    # The web server and the Celery worker share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        # A missing file is refused, never created with the umask's mode (common/sqlite.py).
        "factory": ExistingDatabaseConnection,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHE_URL = envstr("GPUCONFIG_CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Logging in -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pages:settings"
LOGOUT_REDIRECT_URL = "login"

# Login lockout (django-axes): after GPUCONFIG_LOGIN_FAILURE_LIMIT wrong passwords for one
# username from one address, that pair is refused for GPUCONFIG_LOGIN_COOLOFF_MINUTES, on
# the login page and the admin alike. Locking the pair, not the address, keeps one
# mistyping colleague behind a shared NAT from locking everyone else out; the address
# alone is locked only after GPUCONFIG_LOGIN_ADDRESS_FAILURE_LIMIT failures over all
# usernames (password spraying). common/login_lockout.py gives each its own limit.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out logins
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = envbool("GPUCONFIG_LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = envint("GPUCONFIG_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = envfloat("GPUCONFIG_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
GPUCONFIG_LOGIN_ADDRESS_FAILURE_LIMIT = max(
    envint("GPUCONFIG_LOGIN_ADDRESS_FAILURE_LIMIT", 20, minimum=1), AXES_FAILURE_LIMIT
)
AXES_HANDLER = "common.login_lockout.AddressThrottlingAxesHandler"
# A failure while locked is not recorded: else each one restarts the cool-off, and an
# attacker who keeps trying keeps the admin locked out for good.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
# The client's address: REMOTE_ADDR, or X-Forwarded-For when the request comes from one of
# GPUCONFIG_TRUSTED_PROXIES (addresses or CIDRs; empty: trust nobody). Behind the stack's
# proxy every request comes from the proxy, so without it all clients share one address.
GPUCONFIG_TRUSTED_PROXIES = envlist("GPUCONFIG_TRUSTED_PROXIES", [])
for _proxy in GPUCONFIG_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"GPUCONFIG_TRUSTED_PROXIES: {_proxy!r} is not an address or a CIDR network"
        ) from None
AXES_CLIENT_IP_CALLABLE = "common.client_address.client_ip_address"
# /metrics (Prometheus): answered to a scraper that sends "Authorization: Bearer <token>"
# with GPUCONFIG_METRICS_TOKEN, or whose address (as above) is in
# GPUCONFIG_METRICS_ALLOWED_NETWORKS (addresses or CIDRs). Both empty: /metrics is off (404).
GPUCONFIG_METRICS_TOKEN = envstr("GPUCONFIG_METRICS_TOKEN", "").strip()
GPUCONFIG_METRICS_ALLOWED_NETWORKS = envlist("GPUCONFIG_METRICS_ALLOWED_NETWORKS", [])
for _network in GPUCONFIG_METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"GPUCONFIG_METRICS_ALLOWED_NETWORKS: {_network!r} is not an address or a CIDR network"
        ) from None
AXES_VERBOSE = False  # no start-up banner

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(envstr("GPUCONFIG_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# Hashed, compressed files from `collectstatic` (the image collects them at build time) and
# served from STATIC_ROOT with far-future caching. Without it (bin/run, the tests) files are
# served straight from the app folders as they are on disk, so nothing has to be collected
# first; the production path is tested under gunicorn in tests/production/.
GPUCONFIG_STATIC_MANIFEST = envbool("GPUCONFIG_STATIC_MANIFEST", GPUCONFIG_PRODUCTION)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if GPUCONFIG_STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not GPUCONFIG_STATIC_MANIFEST
WHITENOISE_AUTOREFRESH = not GPUCONFIG_STATIC_MANIFEST

# --- Request bodies ----------------------------------------------------------------------
# Bodies larger than this are refused before any parsing (a configuration is a few KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("GPUCONFIG_MAX_BODY_BYTES", 256 * 1024, minimum=1024)
# That limit leaves files out: every body, files included, is refused over it before it is
# read (common/request_limits.py, first of all middleware), except on the one view that
# takes a file and the API that takes one as its body: the backup's 2 MiB
# (gpuconfig.backup.MAX_BYTES), plus the form around it on the page, as the stack's proxy
# allows. Files stay in memory, never more than that of them, never in the temporary folder.
GPUCONFIG_MAX_UPLOAD_FILE_BYTES = 2 * 1024 * 1024
GPUCONFIG_UPLOAD_BODY_LIMITS = {
    "pages:backup-import": GPUCONFIG_MAX_UPLOAD_FILE_BYTES + 52 * 1024,
    "api-gpu-config-import": GPUCONFIG_MAX_UPLOAD_FILE_BYTES,
}
FILE_UPLOAD_HANDLERS = ["common.request_limits.BoundedMemoryUploadHandler"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["common.permissions.StaffWritesOnly"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        # The browsable API, its raw-data forms pre-filled with docs/api.md's examples.
        "config.browsable_api.ExampleBodyBrowsableAPIRenderer",
    ],
    # The API takes JSON only, parsed strictly (depth, duplicate keys, lone surrogates): a
    # form-encoded or multipart PUT is a 415, not a save that silently dropped `assignments`.
    "DEFAULT_PARSER_CLASSES": ["common.parsers.StrictJSONParser"],
    # Per user or token (anonymous callers are refused before it); the rate is read when a
    # request arrives, from GPUCONFIG_API_RATE_USER below ("" switches it off).
    "DEFAULT_THROTTLE_CLASSES": ["common.throttles.ApiUserThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api_errors.exception_handler",
}
GPUCONFIG_API_RATE_USER = envstr("GPUCONFIG_API_RATE_USER", "1200/minute")
SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Config API",
    "DESCRIPTION": "Detect GPUs, assign AI services to them, and apply the change safely.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and Swagger UI are for logged-in users (session or token), like the API.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Every operation documents the answers DRF gives before its view runs (401/403/429, and
    # 400/413/415 for bodies), so the schema lists every status a client can get.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.api_errors.document_common_errors",
    ],
    # Swagger UI from drf-spectacular-sidecar's static files: /api/docs works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: Swagger UI would send the schema's address to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Celery: Redis in production; the embedded default is kombu's filesystem transport,
# which needs no server (the run command starts a worker that reads the same folder, and
# `manage.py prepare_data_dir` creates its folders first).
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis hands an unacknowledged task (acks_late) to another worker after this long: well
    # above the longest apply (compose + health checks, forward and rollback) and a host's
    # part of one, so a long recreate is never run twice. Agents also answer a repeated
    # (run, phase) from their record instead of running it again (orchestration.fanout).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": envint("GPUCONFIG_BROKER_VISIBILITY_SECONDS", 3600, minimum=1200)
    }
CELERY_TASK_IGNORE_RESULT = True  # state lives in ApplyRun rows, not in a result backend
# ...except a host's part of an apply (several hosts): its agent has no database, and answers
# the worker that waits for it through the broker's Redis (the same server, its own keys).
CELERY_RESULT_BACKEND = (
    envstr(
        "CELERY_RESULT_BACKEND",
        CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
    )
    or None
)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
# Celery beat (bin/run's worker -B; the stack's worker, deploy/entrypoint.sh): runs whose
# worker died are marked interrupted here, not inside page and API reads. Twice per stale
# interval, so a dead run is reported within 1.5 x GPUCONFIG_STALE_RUN_SECONDS.
CELERY_BEAT_SCHEDULE = {
    "reap-stale-apply-runs": {
        "task": "orchestration.reap_stale_runs",
        "schedule": max(5, envint("GPUCONFIG_STALE_RUN_SECONDS", 60, minimum=5) // 2),
    },
    # Several hosts: ping every joined agent (Celery remote control) and write offline those
    # silent for GPUCONFIG_HOST_OFFLINE_SECONDS; a dead agent reads offline within 1.5 x that.
    "check-gpu-hosts": {
        "task": "orchestration.check_hosts",
        "schedule": max(2, envint("GPUCONFIG_HOST_OFFLINE_SECONDS", 30, minimum=4) // 2),
    },
}

# --- GPU Config itself -------------------------------------------------------------------
_simulated = envstr("GPUCONFIG_SIMULATED_GPUS", "")
GPUCONFIG_SIMULATED_GPUS: Path | None = Path(_simulated).resolve() if _simulated else None
if GPUCONFIG_SIMULATED_GPUS is not None and not GPUCONFIG_SIMULATED_GPUS.is_file():
    raise ImproperlyConfigured(f"GPUCONFIG_SIMULATED_GPUS={_simulated!r}: no such file")
# Live readings are sampled at most this often, however many clients poll.
GPUCONFIG_SAMPLE_SECONDS = envfloat("GPUCONFIG_SAMPLE_SECONDS", 1.0, minimum=0.1)
# How long the balanced planner may search for its proven optimum per plan (counted in
# search steps, so equal inputs give equal plans); past it, the best plan and its gap.
GPUCONFIG_PLANNER_TIME_BUDGET_MS = envint("GPUCONFIG_PLANNER_TIME_BUDGET_MS", 250, minimum=1)
# A service measured holding more than its gpuconfig.vram_estimate_mb by more than this many
# percent gets a warning (docs/vram.md): allocators round up, so a few percent is normal.
GPUCONFIG_VRAM_OVER_ESTIMATE_MARGIN_PERCENT = envint(
    "GPUCONFIG_VRAM_OVER_ESTIMATE_MARGIN_PERCENT", 10, minimum=0
)

GPUCONFIG_COMPOSE_FILE = Path(
    envstr("GPUCONFIG_COMPOSE_FILE", str(BASE_DIR / "docker-compose.prod.yml"))
).resolve()
GPUCONFIG_OUTPUT_DIR = Path(
    envstr("GPUCONFIG_OUTPUT_DIR", str(GPUCONFIG_COMPOSE_FILE.parent / "config"))
).resolve()
# podman-compose from PyPI (>= 1.4): the venv's copy first, so the app never picks up
# Debian's 1.0.3, which ignores GPU reservations.
_venv_compose = Path(sys.executable).parent / "podman-compose"
GPUCONFIG_COMPOSE_COMMAND = envlist(
    "GPUCONFIG_COMPOSE_COMMAND",
    [str(_venv_compose) if _venv_compose.exists() else "podman-compose"],
)
GPUCONFIG_COMPOSE_PROJECT = envstr("GPUCONFIG_COMPOSE_PROJECT", GPUCONFIG_COMPOSE_FILE.parent.name)
GPUCONFIG_COMPOSE_TIMEOUT_SECONDS = envint("GPUCONFIG_COMPOSE_TIMEOUT_SECONDS", 300, minimum=5)
GPUCONFIG_HEALTH_TIMEOUT_SECONDS = envint("GPUCONFIG_HEALTH_TIMEOUT_SECONDS", 120, minimum=1)
# Several hosts (docs/development/multi-gpu.md, "Adding a host"): an agent not heard from for
# this long is offline; a join token works once, for this many hours.
GPUCONFIG_HOST_OFFLINE_SECONDS = envint("GPUCONFIG_HOST_OFFLINE_SECONDS", 30, minimum=4)
GPUCONFIG_JOIN_TOKEN_HOURS = envint("GPUCONFIG_JOIN_TOKEN_HOURS", 24, minimum=1)
# How old an online agent's report of its containers may get before the host check asks for
# a fresh one (what runs there, drift included, is never older than this plus one check).
GPUCONFIG_HOST_REPORT_SECONDS = envint("GPUCONFIG_HOST_REPORT_SECONDS", 60, minimum=0)
# How long past its compose and health timeouts GPU Config waits for a host's answer to its
# part of a run before it counts the host as gone (the broker's round trips).
GPUCONFIG_HOST_ANSWER_MARGIN_SECONDS = envint("GPUCONFIG_HOST_ANSWER_MARGIN_SECONDS", 30, minimum=1)
# The broker's address as the other hosts reach it (shown in the agent's start command).
GPUCONFIG_AGENT_BROKER_URL = envstr("GPUCONFIG_AGENT_BROKER_URL", "")
# A running apply whose heartbeat is older than this is considered interrupted.
GPUCONFIG_STALE_RUN_SECONDS = envint("GPUCONFIG_STALE_RUN_SECONDS", 60, minimum=5)
# Whether the app runs inside the production stack's containers (the image sets it): advice
# then names the stack's services and the podman socket, not bin/run and apt-get. Not guessed
# from /run/.containerenv: a developer's bin/run may itself run in a container.
GPUCONFIG_IN_CONTAINER = envbool("GPUCONFIG_IN_CONTAINER", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("GPUCONFIG_LOG_LEVEL", "INFO")},
    # Lockouts are logged as warnings; axes' INFO line for every login would bury them.
    "loggers": {"axes": {"level": "WARNING"}},
}
