#!/usr/bin/env bash
# The GPU check (issue 27): CUDA-marked tests, yolov8n training on BCCD against the peer (Ultralytics 8.4.190),
# and latency at batch 1 and 32 (fp32, fp16, ONNX Runtime), written as gpu_check.json + gpu_check.md under $OUT.
#
#   bash benchmarks/gpu_prepare.sh          # here, once: wheels + BCCD into benchmarks/.gpu-carry (ignored)
#   bash benchmarks/gpu_check.sh            # on the GPU machine (device tool: carry benchmarks/.gpu-carry)
#   bash benchmarks/gpu_check.sh --dry-run  # on CPU with tiny sizes (part of the test suite)
#
# Uses the machine's own Python and PyTorch (PYTHON, default python3) with PYTHONPATH=src, never `pip install -e .`
# (that would pull yololab's pinned torch). yololab's missing packages go to a private folder on PYTHONPATH. When the
# peer's wheels are carried and benchmarks/.peer-venv is absent, the peer is installed there: its packages in
# .peer-venv/site, put in front of this same Python's by the launcher .peer-venv/bin/python. Other arguments go to
# benchmarks/gpu_check.py (--help).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
carry="$root/benchmarks/.gpu-carry"
python="${PYTHON:-python3}"
cd "$root"

if [ -d "$carry/wheels/ours" ] && ! "$python" -c "import faster_coco_eval, onnxslim" 2>/dev/null; then
  site="${TMPDIR:-/tmp}/yololab-gpu-site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$carry"/wheels/ours/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"

peer_venv="$root/benchmarks/.peer-venv"
if [ -d "$carry/wheels/peer" ] && [ ! -x "$peer_venv/bin/python" ]; then
  # not a venv: the peer's packages in their own folder, put first on the path of this same Python by a launcher
  mkdir -p "$peer_venv/bin"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$peer_venv/site" \
    "$carry"/wheels/peer/*.whl
  printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' \
    "$peer_venv/site" "$(command -v "$python")" > "$peer_venv/bin/python"
  chmod +x "$peer_venv/bin/python"
  # as benchmarks/peer/setup.sh: a local font under the names the peer would otherwise download
  config="$root/benchmarks/.cache/peer-config/Ultralytics"
  mkdir -p "$config"
  font="$("$python" -c 'import matplotlib, pathlib
print(pathlib.Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")')"
  cp "$font" "$config/Arial.ttf"
  cp "$font" "$config/Arial.Unicode.ttf"
fi

exec "$python" "$root/benchmarks/gpu_check.py" "$@"
