#!/bin/sh
# gpuconfig-proxy's entrypoint (docker-compose.prod.yml mounts this folder at
# /etc/gpuconfig-proxy): picks plain HTTP or TLS from GPUCONFIG_HTTPS, points nginx at the
# web's fixed address (GPUCONFIG_WEB_UPSTREAM; podman's DNS server misses queries while
# containers come and go, and every request would depend on it), and runs nginx in the
# foreground. Works on the official nginx image and on the Debian stand-in.
set -eu
here=/etc/gpuconfig-proxy
tls=/etc/gpuconfig-proxy-tls
run=/tmp/gpuconfig-proxy
mkdir -p "$run"

case "${GPUCONFIG_HTTPS:-0}" in
  1|true|yes|on)
    for file in cert.pem key.pem; do
      if [ ! -r "$tls/$file" ]; then
        echo "GPUCONFIG_HTTPS=1 needs $file in GPUCONFIG_TLS_DIR (mounted at $tls): it is missing or unreadable" >&2
        exit 1
      fi
    done
    site=site-https.conf ;;
  *) site=site-http.conf ;;
esac

https_port="${GPUCONFIG_HTTPS_PORT:-8443}"
case "$https_port" in
  ''|*[!0-9]*) echo "GPUCONFIG_HTTPS_PORT must be a port number, got '$https_port'" >&2; exit 1 ;;
esac

upstream="${GPUCONFIG_WEB_UPSTREAM:-}"
case "$upstream" in
  *[!0-9.:]*|'') echo "GPUCONFIG_WEB_UPSTREAM must be ADDRESS:PORT of gpuconfig-web, got '$upstream'" >&2; exit 1 ;;
esac

# What differs between starts, in one generated file that the static configuration includes.
cat > "$run/generated.conf" <<CONF
map "" \$gpuconfig_web_upstream { default "$upstream"; }
map "" \$gpuconfig_https_port { default "$https_port"; }
include $here/$site;
CONF

exec nginx -c "$here/nginx.conf" -g 'daemon off;'
