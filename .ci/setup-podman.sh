#!/usr/bin/env bash
# Make this machine able to run the real-container tests, and print how to point podman at the
# settings it needs. Idempotent: installs only what is missing, rewrites the same file.
set -euo pipefail

CONF=/etc/gpuconfig/containers.conf

need=()
for pkg in podman runc busybox-static; do
  # busybox-static, not busybox: the stand-in image is FROM scratch, with no dynamic loader.
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The VM forbids raising rlimits, and crun refuses its hybrid cgroups: without these two
# settings every container fails to start. A file of our own, so the system's stays untouched.
mkdir -p "$(dirname "$CONF")"
cat > "$CONF.tmp" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]

[engine]
runtime = "runc"
CONF
mv "$CONF.tmp" "$CONF"

CONTAINERS_CONF="$CONF" podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
echo "export CONTAINERS_CONF=$CONF"
