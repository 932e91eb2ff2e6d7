#!/usr/bin/env bash
# Sets up everything `make demo` and `make test` need on a fresh machine:
#   1. Debian packages for headless rendering (EGL via Mesa) and video, when absent;
#   2. .venv with a working Python 3.12 (PATH first, then pyenv's versions folder);
#   3. the project installed editable with its pinned dependencies.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
STAMP="$VENV/.armvla-installed"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/armvla/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[bootstrap] %s\n' "$*"; }

# --- 1. system packages -----------------------------------------------------------------
# libEGL + Mesa's software rasterizer let MuJoCo render without a display (MUJOCO_GL=egl);
# ffmpeg's shared libraries are what torchcodec decodes dataset videos with.
debs=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 ffmpeg)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. Python 3.12 -----------------------------------------------------------------------
works() { "$1" -c 'import sys, venv; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }
find_python() {
  local c
  for c in "${ARMVLA_PYTHON:-}" python3.12 python3; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && works "$(command -v "$c")" && { command -v "$c"; return; }
  done
  local root
  root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  for c in "$root"/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -x "$c" ] && works "$c" && { echo "$c"; return; }
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! works "$VENV/bin/python"; then
  PY="$(find_python)" || {
    echo "No working Python 3.12 found (tried PATH and \$(pyenv root)/versions/3.12*)." >&2
    echo "Install Python 3.12 or set ARMVLA_PYTHON=/path/to/python3.12." >&2
    exit 1
  }
  log "creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# --- 3. the project ---------------------------------------------------------------------------
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  log "installing armvla and its pinned dependencies (first time: ~6 GB, a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$STAMP"
fi
