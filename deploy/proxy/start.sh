#!/bin/sh
# gpuconfig-proxy's entrypoint (docker-compose.prod.yml mounts this folder at
# /etc/gpuconfig-proxy): picks plain HTTP or TLS from GPUCONFIG_HTTPS, points nginx at the
# container's DNS server (so a recreated gpuconfig-web is found at its new address), and runs
# nginx in the foreground. Works on the official nginx image and on the Debian stand-in.
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

resolver="$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)"
if [ -z "$resolver" ]; then
  echo "no nameserver in /etc/resolv.conf: cannot resolve gpuconfig-web" >&2
  exit 1
fi
case "$resolver" in *:*) resolver="[$resolver]" ;; esac

# What differs between starts, in one generated file that the static configuration includes.
cat > "$run/generated.conf" <<CONF
resolver $resolver valid=10s;
map "" \$gpuconfig_https_port { default "$https_port"; }
include $here/$site;
CONF

exec nginx -c "$here/nginx.conf" -g 'daemon off;'
