#!/usr/bin/env bash
# Set up a machine for ticketlab. Re-running is cheap; each step is skipped when its result is there.
#  1. Debian packages (as root, when missing): dataset-fashion-mnist, the real data of the tests and main job.
#  2. The virtual environment VENV (default .venv) with the pinned dependencies of pyproject.toml, reinstalled only
#     when pyproject.toml changes (its hash is kept in $VENV/.ticketlab-key), and this checkout installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: could not install dataset-fashion-mnist; tests on real data will be skipped" >&2
  else
    echo "setup: Fashion-MNIST missing; as root run: apt-get install dataset-fashion-mnist" >&2
  fi
fi
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
key=$(sha256sum pyproject.toml | cut -c1-16)

if [ "$(cat "$VENV/.ticketlab-key" 2>/dev/null)" != "$key" ] || [ ! -x "$VENV/bin/python" ]; then
  echo "setup: installing dependencies into $VENV (torch is a large download the first time: minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --progress-bar off -e '.[dev]' 2>&1 \
    | grep -v "^WARNING: Location 'file://" || true
  "$VENV/bin/python" -c "import torch, torchvision, sacred, incense, pandas, statsmodels, secantus" \
    || { echo "setup: the installed environment does not import; see the pip output above" >&2; exit 1; }
  echo "$key" > "$VENV/.ticketlab-key"
fi

# The venv may come from a cache made by another checkout: point the editable install at this one.
here=$("$VENV/bin/python" -c "import masking, pathlib; print(pathlib.Path(masking.__file__).resolve().parent.parent)" 2>/dev/null || true)
if [ "$here" != "$(pwd -P)" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -e . 2>&1 \
    | grep -v "^WARNING: Location 'file://" || true
fi
