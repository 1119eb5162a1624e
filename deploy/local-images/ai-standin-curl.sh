#!/bin/sh
# Enough of curl for `curl -fsS URL`: fetch the last argument, fail on an HTTP error.
for url in "$@"; do :; done
exec /bin/busybox wget -q -O /dev/null "$url"
