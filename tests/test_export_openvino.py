"""OpenVINO export (float32 IR, NNCF INT8), the OpenVINO-backed model in predict / val / bench, the optional extra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from model_checks import randomize_batchnorms
from test_export import relative_error
from tiny_training import TINY_MODEL, tiny_dataset
from yololab.cli import main
from yololab.data.synthetic import make_large_scene
from yololab.engine.bench import bench
from yololab.engine.exporter import OnnxModel, export
from yololab.engine.openvino import OpenVinoModel, export_openvino, image_transform, quantize_int8, shared_core
from yololab.engine.validator import validate
from yololab.errors import UserError
from yololab.nn import DetectionModel

openvino = pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
pytest.importorskip("nncf", reason="the [openvino] extra is not installed")

IMGSZ = 64
FP32_TOLERANCE = 1e-4  # relative (boxes and scores separately), as for ONNX
SCENES = [make_large_scene(IMGSZ, IMGSZ, n_objects=4, object_px=(8, 24), seed=i)[0] for i in range(8)]


def tiny_model(names: dict[int, str]) -> DetectionModel:
    model = randomize_batchnorms(DetectionModel(TINY_MODEL, nc=len(names))).eval()
    model.names = names
    return model


def test_openvino_ir_matches_pytorch_and_keeps_metadata(tmp_path):
    model = tiny_model({0: "cat", 1: "dog"})
    result = export_openvino(model, tmp_path / "m.xml", imgsz=IMGSZ, verbose=False)
    assert result["format"] == "openvino" and result["file"] == str(tmp_path / "m.xml")
    assert (tmp_path / "m.bin").is_file() and result["size_mb"] > 0
    x = torch.rand(3, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    ir = OpenVinoModel(result["file"])
    assert relative_error(ir(x), ref) < FP32_TOLERANCE  # 3 images through a batch-1 IR: served in chunks
    assert result["max_abs_diff"] < 1e-3 * (1 + ref.abs().max().item())
    assert ir.names == {0: "cat", 1: "dog"} and ir.stride == 32 and ir.nc == 2 and ir.input_shape == (IMGSZ, IMGSZ)
    assert not ir.int8
    ops = [op.get_type_name() for op in shared_core().read_model(result["file"]).get_ordered_ops()]
    # convert_model's transformations ran: every SiLU is one Swish op, the only Sigmoid left is the class scores'
    assert ops.count("Swish") > 0 and ops.count("Sigmoid") == 1
    with pytest.raises(ValueError, match="exported for input"):
        ir(torch.rand(1, 3, 96, 96))


def test_int8_export_follows_float32_outputs(tmp_path):
    model = tiny_model({0: "cat", 1: "dog"})
    with torch.no_grad():  # class scores around 0.5 instead of the initial prior (~0.001), so that they vary
        for branch in model.model[-1].cv3:
            branch[-1].bias.zero_()
    result = export_openvino(model, tmp_path / "m.xml", imgsz=IMGSZ, calibration=SCENES, verbose=False)
    assert result["format"] == "openvino-int8" and result["file"] == str(tmp_path / "m-int8.xml")
    assert result["fp32_file"] == str(tmp_path / "m.xml") and result["calib_images"] == len(SCENES)
    fp32, int8 = OpenVinoModel(result["fp32_file"]), OpenVinoModel(result["file"])
    assert int8.int8 and int8.names == fp32.names
    x = torch.stack([torch.from_numpy(s).permute(2, 0, 1).float() / 255 for s in SCENES[:4]])
    a, b = fp32(x), int8(x)
    # Coarse by design: 8-bit activations move each output a little, never the picture. Measured: boxes 0.14 px
    # from float32's (median; 1.9 px at most), scores (0.45-0.54) correlated 0.9997 over every anchor and class.
    assert (a[:, :4] - b[:, :4]).abs().median() < 1.0
    assert np.corrcoef(a[:, 4:].flatten(), b[:, 4:].flatten())[0, 1] > 0.99


def head_ops_fed_by_quantizers(xml_file, head: int) -> set[str]:
    """Type and name of every op of model row ``head`` but a convolution that takes an 8-bit quantized input."""
    ops = shared_core().read_model(str(xml_file)).get_ordered_ops()
    return {f"{op.get_type_name()} {op.get_friendly_name()}" for op in ops
            if op.get_friendly_name().startswith(f"/model.{head}/")
            and op.get_type_name() not in ("FakeQuantize", "Convolution", "Constant")
            and any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs())}


def test_int8_export_keeps_the_box_decoding_in_float32(tmp_path):
    model = tiny_model({0: "cat", 1: "dog"})
    head = len(model.model) - 1
    result = export_openvino(model, tmp_path / "m.xml", imgsz=IMGSZ, calibration=SCENES, verbose=False)
    assert head_ops_fed_by_quantizers(result["file"], head) == set()
    # the check has teeth: quantizing every op puts the decoding's arithmetic (Add, Subtract) on 8-bit inputs
    every_op = quantize_int8(Path(result["fp32_file"]), tmp_path / "all.xml", SCENES, image_transform(IMGSZ),
                             verbose=False)
    assert {name.split()[0] for name in head_ops_fed_by_quantizers(every_op, head)} >= {"Add", "Subtract"}


def test_cli_export_predict_and_val_with_an_xml_model(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))  # 4 classes, as tiny_dataset
    data = tiny_dataset(tmp_path / "data", n_train=4, n_val=4)
    assert main(["export", f"model={cfg}", "format=openvino", f"imgsz={IMGSZ}", f"project={tmp_path}", "name=exp",
                 f"data={data}", "json=true"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    xml = tmp_path / "exp" / "tiny.xml"
    assert exported["file"] == str(xml) and exported["max_abs_diff"] < 1e-3
    assert 0 <= exported["fp32_map"] <= 1 and "int8_map" not in exported  # data= given: the IR's val mAP
    source = tmp_path / "data" / "images" / "val"
    assert main(["predict", f"model={xml}", f"source={source}", "conf=0.0001", f"imgsz={IMGSZ}", "save=false",
                 "json=true"]) == 0
    predicted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert predicted["images"] == 4 and predicted["detections"] > 0
    assert main(["val", f"model={xml}", f"data={data}", f"imgsz={IMGSZ}", "plots=false", "json=true"]) == 0
    ir_metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= ir_metrics["map"] <= 1 and set(ir_metrics) >= {"map", "map50", "per_class"}


def test_val_scores_an_ir_like_its_onnx_export(tmp_path):
    model = tiny_model({i: str(i) for i in range(4)})
    data = tiny_dataset(tmp_path / "data", n_train=4, n_val=4)
    ir = OpenVinoModel(export_openvino(model, tmp_path / "m.xml", imgsz=IMGSZ, verbose=False)["file"])
    onnx_model = OnnxModel(export(model, tmp_path / "m.onnx", imgsz=IMGSZ, verbose=False)["file"])
    kwargs = {"imgsz": IMGSZ, "batch": 4, "workers": 0, "verbose": False}
    ir_metrics, onnx_metrics = validate(ir, str(data), **kwargs), validate(onnx_model, str(data), **kwargs)
    assert ir_metrics["map"] == pytest.approx(onnx_metrics["map"], abs=1e-3)


def test_cli_int8_export_reports_both_maps(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))  # 4 classes, as tiny_dataset
    data = tiny_dataset(tmp_path / "data", n_train=6, n_val=4)
    args = ["export", f"model={cfg}", "format=openvino-int8", f"imgsz={IMGSZ}", f"project={tmp_path}", "name=exp"]
    assert main(args + ["json=true"]) == 2  # calibration needs data=
    assert "give data=" in capsys.readouterr().err
    assert main(args + [f"data={data}", "calib_images=4", "json=true"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["file"] == str(tmp_path / "exp" / "tiny-int8.xml") and result["calib_images"] == 4
    assert {"fp32_map", "fp32_map50", "int8_map", "int8_map50"} <= set(result)
    assert result["int8_map_drop"] == round(100 * (result["fp32_map"] - result["int8_map"]), 2)


def test_export_settings_that_do_not_apply_are_errors(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))
    base = ["export", f"model={cfg}", f"imgsz={IMGSZ}", f"project={tmp_path}"]
    assert main(base + ["format=onnx", "data=synthetic"]) == 2
    assert "data= is for the OpenVINO formats" in capsys.readouterr().err
    assert main(base + ["format=openvino", "half=true"]) == 2
    assert "OpenVINO IR is float32" in capsys.readouterr().err


def test_bench_times_openvino_float32_and_int8(capsys):
    result = bench(DetectionModel(TINY_MODEL), imgsz=IMGSZ, formats="onnx,openvino,openvino-int8", runs=2,
                   warmup=1, device="cpu")
    assert [r["format"] for r in result["results"]] == ["onnx", "openvino", "openvino-int8"]
    assert all(0 < r["median_ms"] <= r["p90_ms"] for r in result["results"])
    assert "synthetic scenes (no data= given)" in capsys.readouterr().out


def test_bench_command_calibrates_int8_on_the_train_split(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))
    data = tiny_dataset(tmp_path / "data", n_train=4, n_val=2)
    assert main(["bench", f"model={cfg}", f"imgsz={IMGSZ}", "formats=openvino-int8", f"data={data}", "calib_images=4",
                 "runs=1", "warmup=0", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "openvino-int8 cpu" in out and "synthetic" not in out


def test_missing_openvino_is_a_user_error_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an environment without the extra looks like
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_MODEL))
    assert main(["export", f"model={cfg}", "format=openvino", f"imgsz={IMGSZ}", f"project={tmp_path}"]) == 2
    assert "pip install 'yololab[openvino]'" in capsys.readouterr().err


def test_default_paths_never_import_openvino(tmp_path):
    import cv2

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    cv2.imwrite(str(tmp_path / "x.jpg"), np.full((64, 64, 3), 114, np.uint8))
    onnx_file, image = tmp_path / "export" / "t.onnx", tmp_path / "x.jpg"
    code = ("import sys; from yololab.cli import main; "
            f"main(['export', 'model={tmp_path / 't.yaml'}', 'imgsz=64', 'project={tmp_path}', 'verbose=false']); "
            f"main(['predict', 'model={onnx_file}', 'source={image}', 'save=false', 'verbose=false']); "
            "print(sorted({'openvino', 'nncf'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_broken_or_incomplete_irs_are_user_errors(tmp_path):
    (tmp_path / "x.xml").write_text("<net>not an IR")
    (tmp_path / "x.bin").write_bytes(b"\0\0")
    (tmp_path / "y.xml").write_text("<net/>")
    with pytest.raises(UserError, match="not a loadable OpenVINO IR"):
        OpenVinoModel(tmp_path / "x.xml")
    with pytest.raises(UserError, match="y.bin is missing"):
        OpenVinoModel(tmp_path / "y.xml")
    with pytest.raises(FileNotFoundError, match="OpenVINO model not found"):
        OpenVinoModel(tmp_path / "z.xml")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_released_models_leave_a_valid_signal_stack(tmp_path):
    """Regression: every start of OpenVINO's CPU plugin pointed the thread's alternate signal stack at its own buffer
    and every teardown restored the stack it had found, so two models released in creation order left it on freed
    memory, and the next Python signal handler (SIGCHLD after a DataLoader worker or a subprocess) crashed the
    process or corrupted its heap. The models now share one Core (``shared_core``)."""
    xml = export_openvino(tiny_model({0: "a"}), tmp_path / "m.xml", imgsz=IMGSZ, verbose=False)["file"]
    code = textwrap.dedent(f"""
        import ctypes, faulthandler, gc, signal, subprocess
        from yololab.engine.openvino import OpenVinoModel

        faulthandler.enable()  # gives the thread an alternate signal stack, as pytest does
        signal.signal(signal.SIGCHLD, lambda *args: None)  # a Python handler runs there, like the DataLoader's
        first, second = OpenVinoModel({xml!r}), OpenVinoModel({xml!r})
        del first; gc.collect(); del second; gc.collect()  # released in creation order

        class Stack(ctypes.Structure):
            _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

        stack = Stack()
        ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
        maps = [[int(a, 16) for a in line.split()[0].split("-")] for line in open("/proc/self/maps")]
        print("mapped" if any(lo <= (stack.sp or 0) < hi for lo, hi in maps) else "freed", flush=True)
        for _ in range(5):
            subprocess.run(["true"])  # each exit sends SIGCHLD
        print("survived")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["mapped", "survived"], (out.returncode, out.stdout, out.stderr[-2000:])
