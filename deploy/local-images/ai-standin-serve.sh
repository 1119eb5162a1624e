#!/bin/sh
# Serve /health on both ports the compose file's checks use, and stop at once on SIGTERM.
/bin/busybox mkdir -p /www /tmp
echo ok > /www/health
/bin/busybox httpd -p 8000 -h /www
/bin/busybox httpd -p 8080 -h /www
trap 'exit 0' TERM INT
while :; do /bin/busybox sleep 3600 & wait $!; done
