#!/usr/bin/env bash
# Set up a machine for ticketlab. Re-running is cheap; each step is skipped when its result is there.
#  1. Debian packages (as root, when missing): dataset-fashion-mnist (the real data of the tests and main job),
#     chromium and chromium-driver (the browser test of Omniboard), nodejs and npm (Omniboard), slurm-wlm and
#     munge (the tests of the sweep's Slurm executor start a single-node Slurm cluster of their own).
#  2. Omniboard, pinned in package.json/package-lock.json, into node_modules/ (npm ci).
#  3. The virtual environment VENV (default .venv) with the pinned dependencies of pyproject.toml, reinstalled only
#     when pyproject.toml changes (its hash is kept in $VENV/.ticketlab-key), and this checkout installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v npm >/dev/null || missing+=(nodejs npm)
[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && command -v sbatch >/dev/null || missing+=(slurm-wlm)
[ -x /usr/sbin/munged ] || missing+=(munge)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    # wait up to 5 minutes for another apt or dpkg (unattended upgrades) to release its lock
    log=$(mktemp)
    if ! (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive \
          apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}") >"$log" 2>&1; then
      echo "setup: FAILED: apt-get could not install ${missing[*]} ($(grep -E '^(E|W):' "$log" | tail -1 \
        || tail -1 "$log")); fix that, then run 'make setup' again" >&2
      rm -f "$log"
      exit 1
    fi
    rm -f "$log"
  elif [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "setup: FAILED: missing Debian packages; as root run: apt-get install ${missing[*]}, then 'make setup' again" >&2
    exit 1
  else
    echo "setup: missing Debian packages (as root: apt-get install ${missing[*]}); the tests needing them skip" >&2
  fi
fi

if command -v npm >/dev/null && ! cmp -s package-lock.json node_modules/.ticketlab-lock; then
  echo "setup: installing Omniboard (npm ci)"
  if npm ci --no-audit --no-fund --loglevel=error >/dev/null; then
    cp package-lock.json node_modules/.ticketlab-lock
  else
    echo "setup: npm ci failed; Omniboard and its browser test are unavailable" >&2
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
  "$VENV/bin/python" -W ignore -c "import torch, torchvision, sacred, incense, pandas, statsmodels, secantus" \
    || { echo "setup: the installed environment does not import; see the pip output above" >&2; exit 1; }
  echo "$key" > "$VENV/.ticketlab-key"
fi

# The venv may come from a cache made by another checkout: point the editable install at this one.
here=$("$VENV/bin/python" -c "import masking, pathlib; print(pathlib.Path(masking.__file__).resolve().parent.parent)" 2>/dev/null || true)
if [ "$here" != "$(pwd -P)" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -e . 2>&1 \
    | grep -v "^WARNING: Location 'file://" || true
fi
