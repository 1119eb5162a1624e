#!/bin/sh
# The image's entrypoint: `web` (gunicorn), `worker` (Celery worker with its beat), `agent`
# (a GPU host's agent, docker-compose.agent.yml: no database, no migrations), or any
# manage.py command (`manage.py export_gpu_config`, ...).
# podman-compose ignores `depends_on: condition: service_healthy` on podman 4.3, so each
# process waits for PostgreSQL itself; only the web process migrates, the worker waits for it.
set -eu
cd /app

# The stack's compose file includes the generated override (GPUCONFIG_GPU_OVERRIDE in .env),
# and podman-compose stops with a traceback when an included file is missing. Before the first
# Apply there is none: write an empty, valid one (GPU Config replaces it on Apply).
ensure_override() {
  dir="${GPUCONFIG_OUTPUT_DIR:-/var/lib/gpuconfig/config}"
  override="$dir/docker-compose.gpu-override.yml"
  if [ ! -w "$dir" ]; then
    echo "GPU Config cannot write to $dir (GPUCONFIG_OUTPUT_DIR), where Apply writes the GPU" \
      "override: on the host, run  chown 1000:1000 $dir  (the app's user) and start again." >&2
    exit 1
  fi
  if [ ! -e "$override" ]; then
    printf '%s\n' "# No configuration applied yet: GPU Config writes this file on Apply." \
      "services: {}" > "$override.tmp"
    mv "$override.tmp" "$override"
  fi
}

case "${1:-web}" in
  web)
    ensure_override
    # What the embedded defaults keep in GPUCONFIG_DATA_DIR; nothing in production mode
    # (PostgreSQL, Redis and DJANGO_SECRET_KEY are required there).
    python manage.py prepare_data_dir
    python manage.py wait_for_db --timeout "${GPUCONFIG_DB_WAIT_SECONDS:-120}"
    python manage.py migrate --noinput
    python manage.py detect_gpus
    if [ -n "${DJANGO_SUPERUSER_USERNAME:-}" ] && [ -n "${DJANGO_SUPERUSER_PASSWORD:-}" ]; then
      # First start only: an existing user of that name is left as it is.
      python manage.py createsuperuser --noinput --email "${DJANGO_SUPERUSER_EMAIL:-admin@localhost}" \
        >/dev/null 2>&1 && echo "Created superuser ${DJANGO_SUPERUSER_USERNAME}" || true
    fi
    exec gunicorn --config /app/deploy/gunicorn.conf.py config.wsgi:application
    ;;
  worker)
    python manage.py prepare_data_dir
    python manage.py wait_for_db --migrated --timeout "${GPUCONFIG_DB_WAIT_SECONDS:-120}"
    # -B: the periodic tasks (stale apply runs) run inside the one worker; run a separate
    # `celery beat` instead if you ever start more than one worker.
    exec celery -A config worker -B --loglevel "${GPUCONFIG_LOG_LEVEL:-INFO}" \
      --concurrency "${GPUCONFIG_WORKER_CONCURRENCY:-2}" \
      --schedule /var/lib/gpuconfig/data/celerybeat-schedule
    ;;
  agent)
    # Joins GPU Config once, reports, then becomes the Celery worker of this host's queue
    # (orchestration/agent/). It reads no database: nothing to wait for or prepare.
    exec python manage.py run_agent
    ;;
  manage.py)
    shift
    exec python manage.py "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
