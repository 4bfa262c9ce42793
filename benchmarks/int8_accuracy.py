"""INT8 post-training quantization accuracy: NNCF (OpenVINO) presets and scopes against ONNX Runtime static QDQ.

One trained checkpoint, one dataset: the float32 export and every INT8 variant are validated on the val split by the
same validator (square letterboxed input of the export size, conf 0.001), and their mAP50-95 / mAP50 are printed
with the drop from float32 in points. Calibration: ``--calib`` training images drawn with the exporter's seeded
subset, letterboxed like the predictor. Variants:

- ``nncf-mixed``: what ``yololab export format=openvino-int8`` does (MIXED preset: symmetric weights, asymmetric
  activations; the head's box decoding, every op of the head but its convolutions, kept in float32 through NNCF's
  ignored scope); ``nncf-performance``: PERFORMANCE preset (symmetric activations too), decoding in float32;
- ``...-all-ops``: the same with every op quantized, the box decoding too;
- ``ort-static-qdq``: ONNX Runtime ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax
  calibration) on the slimmed ONNX export, decoding ops excluded like above, run by onnxruntime.

Run: ``.venv/bin/python benchmarks/int8_accuracy.py --weights best.pt --data ../shared/datasets/bccd/data.yaml
[--imgsz 320] [--calib 300]``. Speed is not measured here (``yololab bench formats=...`` and latency_vs_peer.py).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from yololab import YOLO
from yololab.data import load_data_config, load_image
from yololab.engine.exporter import OnnxModel, export
from yololab.engine.openvino import (
    OpenVinoModel,
    box_decoding_scope,
    calibration_subset,
    export_openvino,
    image_transform,
    quantize_int8,
)
from yololab.engine.validator import validate

NNCF_VARIANTS = {"nncf-mixed": ("mixed", True), "nncf-performance": ("performance", True),
                 "nncf-mixed-all-ops": ("mixed", False),
                 "nncf-performance-all-ops": ("performance", False)}  # name: (preset, box decoding in float32)
VARIANTS = (*NNCF_VARIANTS, "ort-static-qdq")


def ort_static_int8(onnx_file: Path, out: Path, calibration: list, transform, ignored: list[str]) -> Path:
    """ONNX Runtime static quantization (QDQ) of ``onnx_file``; nodes whose names match ``ignored`` stay float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"images": transform(item)}

    prepared = out.with_name("prepared.onnx")
    quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)
    names = [n.name for n in onnx.load(str(prepared)).graph.node]
    excluded = [n for n in names if any(re.match(p, n) for p in ignored)]
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--calib", type=int, default=300)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line at the end")
    args = parser.parse_args()
    wanted = args.variants.split(",")

    model = YOLO(args.weights).model.eval()
    data = load_data_config(args.data)
    calibration = calibration_subset(data.split("train"), args.calib)
    transform = image_transform(args.imgsz, load_image)
    ignored = box_decoding_scope(model)
    rows = []

    def score(name: str, runner) -> None:
        m = validate(runner, data, imgsz=args.imgsz, batch=8, workers=0, verbose=False)
        rows.append({"variant": name, "map": m["map"], "map50": m["map50"]})
        print(f"{name:<32} mAP50-95 {m['map']:.4f}  mAP50 {m['map50']:.4f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as tmp:
        tmp = Path(tmp)
        xml = Path(export_openvino(model, tmp / "fp32.xml", imgsz=args.imgsz, verbose=False)["file"])
        score("openvino-fp32", OpenVinoModel(xml))
        for name, (preset, decode_fp32) in NNCF_VARIANTS.items():
            if name in wanted:
                int8 = quantize_int8(xml, tmp / f"{name}.xml", calibration, transform,
                                     ignored=ignored if decode_fp32 else None, preset=preset, verbose=False)
                score(name, OpenVinoModel(int8))
        if "ort-static-qdq" in wanted:
            onnx_file = Path(export(model, tmp / "fp32.onnx", imgsz=args.imgsz, verbose=False)["file"])
            score("onnxruntime-fp32", OnnxModel(onnx_file))
            score("ort-static-qdq", OnnxModel(ort_static_int8(onnx_file, tmp / "int8.onnx", calibration, transform,
                                                              ignored)))
    base = {r["variant"]: r for r in rows}
    print(f"\n{'variant':<32} {'mAP50-95':>9} {'drop pts':>9} {'mAP50':>7} {'drop pts':>9}")
    for r in rows:
        ref = base["onnxruntime-fp32" if r["variant"].startswith(("ort", "onnx")) else "openvino-fp32"]
        print(f"{r['variant']:<32} {r['map']:>9.4f} {100 * (ref['map'] - r['map']):>9.2f} {r['map50']:>7.4f} "
              f"{100 * (ref['map50'] - r['map50']):>9.2f}")
    if args.json:
        print(json.dumps({"imgsz": args.imgsz, "calib_images": len(calibration), "rows": rows}))


if __name__ == "__main__":
    main()
