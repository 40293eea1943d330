#!/usr/bin/env bash
# The wheels scripts/gpu-check.sh installs on a GPU machine that has torch but not the rest (offline: no package
# index there), downloaded here into .whl/ (git-ignored: add '/.whl/' to .git/info/exclude once) for its Python:
#
#   scripts/gpu-wheels.sh [PYTHON_VERSION]      # default 3.12 (a CUDA image's python3)
#
# Each package is named with its one version (pip download --no-deps: a missing dependency is a missing line here);
# the machine is expected to have torch, numpy, pandas, matplotlib, scipy, statsmodels, tqdm, psutil, pytest, PyYAML,
# packaging, python-dateutil, six, colorama and py-cpuinfo. setuptools < 82 travels for sacred's pkg_resources, wrapt
# < 2 for sacred. SecantusDB is not pure Python (it bundles a compiled WiredTiger), nor are pymongo, shapely, wrapt.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
WHEELS=(
    sacred==0.8.7 docopt-ng==0.9.0 jsonpickle==4.1.4 munch==4.0.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3
    wrapt==1.17.3 setuptools==81.0.0
    pymongo==4.20.1 dnspython==2.9.2
    SecantusDB==0.7.0b3 s2sphere==0.2.5 future==1.0.0 shapely==2.2.0
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        "${platforms[@]}" -d .whl "$wheel"
done
ls .whl
du -sh .whl
