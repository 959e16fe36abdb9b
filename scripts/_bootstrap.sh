# shellcheck shell=bash
# Sourced by scripts/test and scripts/dev: cd to the repo root and make sure .venv is current.

BILLFOLD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$BILLFOLD_ROOT"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# Same search as tests/support/postgres.py: $PG_BIN, /usr/lib/postgresql/*/bin, pg_config.
have_pg_server() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/initdb" ]
    return
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
  command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]
}

find_python() {
  local py
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null &&
      "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  step "Creating .venv"
  if ! find_python >/dev/null || ! "$(find_python)" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3 python3-venv  # a fresh Debian lacks venv/ensurepip
  fi
  BILLFOLD_PYTHON="$(find_python)" || { echo "need Python >= 3.11" >&2; exit 1; }
  rm -rf .venv
  "$BILLFOLD_PYTHON" -m venv .venv
fi

BILLFOLD_STAMP=.venv/.billfold-pyproject.sha256
if ! sha256sum --status -c "$BILLFOLD_STAMP" 2>/dev/null; then
  step "Installing billfold, its Python client and the dev tools into .venv"
  # The client (clients/python) is its own package; its tests run in the main suite.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e clients/python
  sha256sum pyproject.toml clients/python/pyproject.toml >"$BILLFOLD_STAMP"
fi
