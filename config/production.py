"""Production mode: the embedded defaults that let ``bin/run`` need nothing are refused.

The stack sets ``GPUCONFIG_PRODUCTION=1``. A forgotten variable then stops the container at
start with a sentence naming it, instead of the app quietly keeping its data in a SQLite
file inside a container, queueing applies in a folder no worker reads, or signing sessions
with a key that changes with every new container.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

REFUSE_SQLITE = (
    "GPUCONFIG_PRODUCTION=1 refuses SQLite: set DATABASE_URL to a PostgreSQL URL "
    "(postgres://USER:PASSWORD@HOST:5432/NAME)."
)
REFUSE_FILESYSTEM_BROKER = (
    "GPUCONFIG_PRODUCTION=1 refuses the filesystem Celery broker: set CELERY_BROKER_URL "
    "to a Redis URL (redis://HOST:6379/0)."
)
REFUSE_MISSING_KEY = (
    "GPUCONFIG_PRODUCTION=1 needs DJANGO_SECRET_KEY: set it to a long random string, e.g. "
    "the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
)
REFUSE_DEBUG = (
    "GPUCONFIG_PRODUCTION=1 refuses DJANGO_DEBUG=1: debug pages show settings and source "
    "code to anyone who makes a request fail; set DJANGO_DEBUG=0."
)


def embedded_default_refusals(environ: Mapping[str, str], *, debug: bool) -> list[str]:
    """The sentences for every embedded default still in force (empty when none is)."""
    refusals = []
    # Unset means the embedded default (SQLite under .data/, kombu's filesystem transport).
    database_url = environ.get("DATABASE_URL", "").strip()
    if not database_url or database_url.lower().startswith("sqlite"):
        refusals.append(REFUSE_SQLITE)
    broker_url = environ.get("CELERY_BROKER_URL", "").strip()
    if not broker_url or broker_url.lower().startswith("filesystem"):
        refusals.append(REFUSE_FILESYSTEM_BROKER)
    if not environ.get("DJANGO_SECRET_KEY", "").strip():
        refusals.append(REFUSE_MISSING_KEY)
    if debug:
        refusals.append(REFUSE_DEBUG)
    return refusals


def refuse_embedded_defaults(environ: Mapping[str, str], *, debug: bool) -> None:
    """Raise ImproperlyConfigured listing every refusal at once, so one restart fixes all."""
    refusals = embedded_default_refusals(environ, debug=debug)
    if refusals:
        raise ImproperlyConfigured("\n".join(refusals))
