"""gunicorn settings for the production image (and the load benchmark, which runs the same)."""

import os

bind = os.environ.get("GPUCONFIG_BIND", "0.0.0.0:8000")
# Threads rather than many processes: the pages mostly wait on PostgreSQL and podman, and
# each process keeps one GPU sample cache and one database pool (see docs/configuration.md).
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 10
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "0") == "1" else None
errorlog = "-"
# With the stack's proxy in front, %(h)s is always the proxy: log the client address it
# forwarded (X-Forwarded-For, which the proxy replaces, never appends to) and the scheme.
access_log_format = (
    '%(h)s fwd=%({x-forwarded-for}i)s proto=%({x-forwarded-proto}i)s "%(r)s" %(s)s %(b)s %(M)sms'
)
