#!/usr/bin/env bash
# Install the peer framework (Ultralytics 8.4.190) into its own venv, benchmarks/.peer-venv, for
# benchmarks/train_vs_peer.py. It is never a dependency of yololab and nothing under src/ imports it.
# The peer then runs fully offline: YOLO_OFFLINE=1, a private YOLO_CONFIG_DIR (benchmarks/.cache/peer-config)
# whose Ultralytics/ folder holds a local font under the names it would otherwise download (Arial.ttf,
# Arial.Unicode.ttf).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"          # benchmarks/
venv="$here/.peer-venv"
config="$here/.cache/peer-config"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# Same torch as yololab's environment, so the comparison measures the frameworks, not torch builds.
"$venv/bin/python" -m pip install --quiet "ultralytics==8.4.190" "torch==2.14.1" "torchvision==0.29.1"

mkdir -p "$config/Ultralytics"     # the peer's user config dir is $YOLO_CONFIG_DIR/Ultralytics
font="$("$venv/bin/python" -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")')"
cp "$font" "$config/Ultralytics/Arial.ttf"
cp "$font" "$config/Ultralytics/Arial.Unicode.ttf"

YOLO_OFFLINE=1 YOLO_CONFIG_DIR="$config" "$venv/bin/python" -c \
  "import ultralytics, torch; print('peer ready: ultralytics', ultralytics.__version__, 'torch', torch.__version__)"
