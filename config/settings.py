"""Settings for GPU Config, read from the environment (see docs/configuration.md).

Embedded defaults need no server: SQLite and a filesystem Celery broker under ``.data/``.
Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import envbool, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("GPUCONFIG_DATA_DIR", str(BASE_DIR / ".data")))


def _secret_key() -> str:
    key = envstr("DJANGO_SECRET_KEY", "")
    if key:
        return key
    # Embedded default: one random key per installation, kept beside the SQLite database,
    # so sessions survive restarts without anyone having to invent a secret.
    path = DATA_DIR / "secret-key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "devices",
    "gpuconfig",
    "orchestration",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # The web server and the Celery worker share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "gpuconfig:settings"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# Bodies larger than this are refused before any parsing (a configuration is a few KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("GPUCONFIG_MAX_BODY_BYTES", 256 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gpuconfig.permissions.StaffWritesOnly"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "gpuconfig.apis_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Config API",
    "DESCRIPTION": "Detect GPUs, assign AI services to them, and apply the change safely.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Celery: Redis in production; the embedded default is kombu's filesystem transport,
# which needs no server (the run command starts a worker that reads the same folder).
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "celery-broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True  # state lives in ApplyRun rows, not in a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)

# --- GPU Config itself -------------------------------------------------------------------
_simulated = envstr("GPUCONFIG_SIMULATED_GPUS", "")
GPUCONFIG_SIMULATED_GPUS: Path | None = Path(_simulated).resolve() if _simulated else None
if GPUCONFIG_SIMULATED_GPUS is not None and not GPUCONFIG_SIMULATED_GPUS.is_file():
    raise ImproperlyConfigured(f"GPUCONFIG_SIMULATED_GPUS={_simulated!r}: no such file")
# Live readings are sampled at most this often, however many clients poll.
GPUCONFIG_SAMPLE_SECONDS = envfloat("GPUCONFIG_SAMPLE_SECONDS", 1.0, minimum=0.1)

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
# A running apply whose heartbeat is older than this is considered interrupted.
GPUCONFIG_STALE_RUN_SECONDS = envint("GPUCONFIG_STALE_RUN_SECONDS", 60, minimum=5)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("GPUCONFIG_LOG_LEVEL", "INFO")},
}
