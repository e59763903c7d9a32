#!/usr/bin/env bash
# GPU proof (issue 9) in one go: GPU-marked tests + GPU benchmarks, results under $OUT and
# benchmarks/results/<machine>/.  Two modes:
#
#   bash benchmarks/gpu_proof.sh prepare   # on a connected machine: wheels an offline GPU machine lacks
#                                          # -> .whl/, the shared videos + realdev -> .cache/shared_data/
#                                          # (both git-ignored); copy the tree with them to the GPU machine
#   bash benchmarks/gpu_proof.sh [run --budget S]   # on the GPU machine
#   bash benchmarks/gpu_proof.sh train [--minutes M] # on the GPU machine: a real-data training run
#                                          # from .cache/train_pack (python -m benchmarks.gpu_train pack)
#
# The results land in benchmarks/results/<machine>/ and, as results_<machine>.tar.gz, under $OUT.
# A tritonserver with the TensorRT backend (on PATH or in /opt/tritonserver) adds the Triton step
# (benchmarks/gpu_triton.py); without one that step is recorded as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SHARED=${DBRT_SHARED_DATA:-$REPO/../shared/data}
# not on the GPU image (torch, cupy, onnxruntime, cv2 are); shapely: the post-processing benchmark's
# reference implementation (tests/reference_db.py), 3 MB
WHEELS="av==18.1.0 pyclipper==1.4.0 shapely==2.1.2"

if [ "${1:-run}" = "prepare" ]; then
    PY=${PY:-$REPO/.venv/bin/python}
    mkdir -p .whl .cache/shared_data/video
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $WHEELS || exit 1
    cp --no-preserve=mode "$SHARED/video/pexels_lightbox_text_960x506.mp4" .cache/shared_data/video/ || exit 1
    # the 1080x1920 street video: the video decoder step's (software decoding is the host's limit there)
    cp --no-preserve=mode "$SHARED/video/pexels_street_captions_1080x1920.mp4" .cache/shared_data/video/ || exit 1
    cp -r --no-preserve=mode "$SHARED/realdev" .cache/shared_data/ || exit 1
    du -sh .whl .cache/shared_data
    exit 0
fi

for WHEEL_DIR in .whl .cache/train_pack/wheels; do   # one pip call each: the same wheel may be in both
    if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$WHEEL_DIR"/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
done
# the post-processing's optional C modules, in place (without a compiler: the NumPy fallback)
python3 setup.py -q build_ext --inplace >/dev/null 2>&1 \
    || echo "gpu_proof: C modules not built here; post-processing runs its NumPy fallback" >&2
if [ "${1:-run}" = "train" ]; then   # a real-data training run (benchmarks/gpu_train.py)
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    OUT=${OUT:-$REPO/out/gpu_train}
    python3 -m benchmarks.gpu_train run --out "$OUT" "${@:2}"
    exit $?
fi
OUT=${OUT:-$REPO/out/gpu_proof}
mkdir -p "$OUT"
[ -d .cache/shared_data ] && export DBRT_SHARED_DATA=$REPO/.cache/shared_data
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/nvidia_smi.txt"
python3 -m benchmarks.gpu_proof --out "$OUT" "${@:2}" 2>&1 | tee "$OUT/gpu_proof.log"
exit "${PIPESTATUS[0]}"
