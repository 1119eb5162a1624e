# Sourced by bin/run and bin/test: find Python >= 3.12 and make the project's .venv with it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
  local candidates=("${GPUCONFIG_PYTHON:-}" python3.13 python3.12 python3)
  if command -v pyenv >/dev/null 2>&1; then
    # pyenv's shims refuse unselected versions, so look at the interpreters themselves.
    for dir in "$(pyenv root)"/versions/3.13.* "$(pyenv root)"/versions/3.12.*; do
      [ -x "$dir/bin/python3" ] && candidates+=("$dir/bin/python3")
    done
  fi
  for py in "${candidates[@]}"; do
    [ -n "$py" ] || continue
    if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      command -v "$py" || echo "$py"
      return 0
    fi
  done
  echo "GPU Config needs Python >= 3.12 and none was found (set GPUCONFIG_PYTHON=/path/to/python3.12)." >&2
  return 1
}

ensure_venv() {
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
    rm -rf .venv
    "$(find_python)" -m venv .venv
  fi
  # Reinstall only when pyproject.toml or the lockfile changed since the last install. The
  # lockfile pins every version (bin/lock writes it); the editable install after it adds
  # nothing when the lock is current, and keeps a fresh pyproject edit working until bin/lock.
  local stamp=.venv/.installed-$(cat pyproject.toml requirements-dev.lock 2>/dev/null | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ -f requirements-dev.lock ]; then
      .venv/bin/python -m pip install --quiet -r requirements-dev.lock
    fi
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}
