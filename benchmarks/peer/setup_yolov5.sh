#!/usr/bin/env bash
# Install the packaged YOLOv5 (yolov5==7.0.14 on the package index: the v7.0 code base, anchor-based) into its own
# venv, benchmarks/.peer-yolov5-venv, for benchmarks/train_vs_yolov5.py. Never a dependency of yololab; nothing under
# src/ imports it. What it needs to run offline (set by benchmarks/_peer.py:yolov5_env for the peer process only):
# - YOLOV5_CONFIG_DIR pointing at a folder with a local Arial.ttf (else it downloads the font); we copy the DejaVu
#   Sans that matplotlib ships under the names it looks for;
# - setuptools < 81: its utils/general.py imports pkg_resources, which newer setuptools no longer ship;
# - YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=false: its requirement checks come from the ultralytics package and would
#   otherwise try to pip-install what is missing;
# - TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: its final checkpoint strip calls torch.load without weights_only=False;
# - np.trapz, gone from numpy 2, is aliased to np.trapezoid by the harness before the peer runs.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"          # benchmarks/
venv="$here/.peer-yolov5-venv"
config="$here/.cache/peer-yolov5-config"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# Same torch as yololab's environment and the same ultralytics as the other peer (yolov5 depends on it).
"$venv/bin/python" -m pip install --quiet "yolov5==7.0.14" "ultralytics==8.4.190" "torch==2.14.1" \
  "torchvision==0.29.1" "setuptools<81"

mkdir -p "$config"
font="$("$venv/bin/python" -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")')"
cp "$font" "$config/Arial.ttf"
cp "$font" "$config/Arial.Unicode.ttf"

YOLOV5_CONFIG_DIR="$config" YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false "$venv/bin/python" -c \
  "import yolov5, torch; print('peer ready: yolov5', yolov5.__version__, 'torch', torch.__version__)"
