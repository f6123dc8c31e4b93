#!/usr/bin/env bash
# Prepare and install what benchmarks/gpu_suite.py needs on a GPU machine without network.
#
#   bash benchmarks/gpu_setup.sh download      # here (network): wheels for cp312 manylinux x86_64 into .whl/
#   bash benchmarks/gpu_setup.sh stage-cifar   # here, optional (part 4): copy the CIFAR-10 folder into .gpu_data/
#   eval "$(bash benchmarks/gpu_setup.sh install)"   # there: install into /tmp/site, export PYTHONPATH
#
# .whl/ is in .gitignore and .gpu_data/ is added to .git/info/exclude: neither is ever committed. Both
# travel to the device machine only when the run names them in carry.
set -euo pipefail
cd "$(dirname "$0")/.."
REQS=benchmarks/gpu_requirements.txt
WHL=.whl
SITE=${SPIKEC_GPU_SITE:-/tmp/site}
CIFAR_SRC=${CIFAR_SRC:-../shared/data/cifar10}
PY=${PYTHON:-python3}

requirements() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$REQS" | grep -v '^$'; }

case "${1:-}" in
  download)
    mkdir -p "$WHL"
    for req in $(requirements); do
      if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "$req" 2>/dev/null; then
        echo "no wheel of $req for cp312 manylinux: building one from its sdist" >&2
        "$PY" -m pip wheel -q --no-deps -w "$WHL" "$req"
      fi
    done
    for f in "$WHL"/*.whl; do  # a wheel built here must be pure Python to run there
      case "$f" in *-none-any.whl|*cp312*manylinux*x86_64*.whl) ;; *) echo "not usable on the GPU machine: $f" >&2; exit 1;; esac
    done
    ls -l "$WHL" >&2
    du -cb "$WHL"/*.whl | tail -1 >&2
    ;;
  stage-cifar)
    [ -d "$CIFAR_SRC/train" ] && [ -d "$CIFAR_SRC/test" ] || { echo "no CIFAR-10 folder at $CIFAR_SRC (set CIFAR_SRC)" >&2; exit 1; }
    grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
    mkdir -p .gpu_data
    rm -rf .gpu_data/cifar10
    cp -r "$CIFAR_SRC" .gpu_data/cifar10
    du -sb .gpu_data/cifar10 >&2
    echo "run the suite with --cifar .gpu_data/cifar10 and carry .gpu_data" >&2
    ;;
  install)
    ls "$WHL"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHL: run 'bash benchmarks/gpu_setup.sh download' first" >&2; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl >&2
    # spikec from this tree (models/, conversion/, hardware/ install as spikec.* subpackages)
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" . >&2
    PYTHONPATH="$SITE" "$PY" -c "import spikec, spikec.models, snntorch, norse, spikingjelly" >&2
    echo "export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_setup.sh download | stage-cifar | install" >&2
    exit 2
    ;;
esac
