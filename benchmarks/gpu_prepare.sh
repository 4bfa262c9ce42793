#!/usr/bin/env bash
# Prepare the GPU check's carry folder, benchmarks/.gpu-carry (ignored by git; the device tool's `carry` takes it):
#   wheels/ours/  what yololab needs beyond the device image (Python 3.12, its own torch; see
#                 /work/.library/device/KINDS.md): faster-coco-eval, onnxslim
#   wheels/peer/  the peer, Ultralytics 8.4.190, and the requirements the image lacks (installed only into the
#                 peer's venv, never where yololab runs)
#   bccd/         a copy of ../shared/datasets/bccd (../shared does not travel to the device)
# The wheels are exact versions for CPython 3.12 on manylinux x86_64, fetched with pip (needs network here).
# Not carried: onnxruntime-gpu (its cp312 wheel is ~244 MiB, over the 64 MiB a device call may carry), so ONNX
# Runtime runs with the image's CPU-only build and the CUDA-provider rows report themselves skipped.
# polars is pinned to 1.20.0, a single 33 MB wheel: polars 2.x splits into a 54 MB runtime that does not fit
# beside the dataset. The peer imports polars when it saves a checkpoint (results.csv into the checkpoint).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"               # benchmarks/
carry="$here/.gpu-carry"
data="${1:-$here/../../shared/datasets/bccd}"
limit_mib=64

OURS_WHEELS=(faster-coco-eval==1.8.0 onnxslim==0.1.98)
PEER_WHEELS=(ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99 polars==1.20.0)

download() {  # download DIR SPEC...: exact wheels for the device's Python, no dependencies
  local dir="$1"; shift
  mkdir -p "$dir"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dir" "$@"
}

rm -rf "$carry/wheels"
download "$carry/wheels/ours" "${OURS_WHEELS[@]}"
download "$carry/wheels/peer" "${PEER_WHEELS[@]}"

if [ -f "$data/data.yaml" ]; then
  rm -rf "$carry/bccd"
  cp -r "$data" "$carry/bccd"
else
  echo "warning: $data/data.yaml not found; no dataset copied (gpu_check.sh then needs --data)" >&2
fi

ls -l "$carry"/wheels/*/
root="$(git -C "$here" rev-parse --show-toplevel)"
carry_mib=$(du -sm "$carry" | cut -f1)
tree_mib=$(git -C "$root" ls-files -z | (cd "$root" && xargs -0 du -cm 2>/dev/null) | tail -1 | cut -f1)
echo "carry folder $carry: ${carry_mib} MiB; tracked files ${tree_mib} MiB; limit ${limit_mib} MiB per device call"
if [ $((carry_mib + tree_mib)) -gt "$limit_mib" ]; then
  echo "error: carry folder and tracked files exceed ${limit_mib} MiB" >&2
  exit 1
fi
