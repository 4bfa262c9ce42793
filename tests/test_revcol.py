"""RevCol: reversible training equals plain autograd, saves memory, builds from YAML, exports to ONNX."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from model_checks import assert_fuses_and_exports
from yololab.nn import DetectionModel, ModelConfigError, fuse_modules, load_model_yaml
from yololab.nn.parse import build_layers
from yololab.nn.revcol import RevCol, reconstruction_errors


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one intra-op thread avoids thread-pool waits on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(channels=[8, 16, 24, 32], layers=[1, 2, 1, 1])
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "revcol_memory.py"


def tiny_revcol(save_memory: bool, columns: int = 3, block: str = "convnext", drop_path: float = 0.3,
                dtype: torch.dtype = torch.float64, anchor_every: int = 0) -> RevCol:
    """A small RevCol whose layer scales and alphas (both signs) are randomised so every path matters."""
    torch.manual_seed(0)
    net = RevCol(3, **TINY, columns=columns, block=block, drop_path=drop_path, save_memory=save_memory,
                 anchor_every=anchor_every)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.8)
            elif name.endswith("alpha"):
                p.copy_(torch.empty_like(p).uniform_(0.3, 1.0) * torch.where(torch.rand_like(p) < 0.5, -1.0, 1.0))
    return net.to(dtype).train()


def gradients(net: nn.Module, images: torch.Tensor, seed: int = 1) -> tuple[dict, torch.Tensor]:
    """Parameter and input gradients of a fixed random projection of the outputs."""
    net.zero_grad(set_to_none=True)
    images = images.clone().requires_grad_()
    torch.manual_seed(seed)
    outputs = net(images)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    torch.manual_seed(123)
    sum((o * torch.randn_like(o)).sum() for o in outputs).backward()
    return {n: p.grad for n, p in net.named_parameters() if p.requires_grad}, images.grad


def assert_same_gradients(a: dict, b: dict, rtol: float = 1e-6) -> None:
    """Every gradient present in both and equal to ``rtol`` relative to the tensor's largest gradient."""
    assert a.keys() == b.keys()
    missing = [name for name in b if a[name] is None or b[name] is None]
    assert not missing, f"no gradient for {missing}"
    scale = max(g.abs().max().item() for g in b.values())
    for name in b:
        # relative to the tensor's own largest gradient; the floor covers gradients that are exactly 0
        # in theory (a bias right before a training-mode BatchNorm)
        tol = rtol * max(b[name].abs().max().item(), 1e-9 * scale)
        assert (a[name] - b[name]).abs().max().item() <= tol, name


@pytest.mark.parametrize("block, drop_path, anchor_every", [("convnext", 0.3, 0), ("convnext", 0.3, 2),
                                                           ("c2f", 0.0, 0)])
def test_reversible_gradients_equal_plain_float64(block, drop_path, anchor_every):
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    plain = tiny_revcol(False, block=block, drop_path=drop_path)
    rev = tiny_revcol(True, block=block, drop_path=drop_path, anchor_every=anchor_every)
    g_plain, x_plain = gradients(plain, images)
    g_rev, x_rev = gradients(rev, images)
    assert_same_gradients(g_rev, g_plain)
    assert (x_rev - x_plain).abs().max() <= 1e-6 * x_plain.abs().max()
    alphas = [n for n in g_plain if n.endswith("alpha")]
    assert len(alphas) == 4 * 2 and all(g_plain[n].abs().max() > 0 for n in alphas)  # columns 1, 2 only
    if drop_path:  # drop path is really sampling: another seed gives other outputs
        torch.manual_seed(1)
        a = plain(images)[0]
        torch.manual_seed(2)
        assert not torch.allclose(a, plain(images)[0])
    else:  # BatchNorm statistics were updated once per step, not again by the recomputation
        for (name, b_plain), (_, b_rev) in zip(plain.named_buffers(), rev.named_buffers()):
            torch.testing.assert_close(b_rev, b_plain, rtol=1e-12, atol=0, msg=name)
            if name.endswith("num_batches_tracked"):
                assert b_rev.item() == 1, name
    assert type(rev(images)[0].grad_fn).__name__ == "ReversibleColumnsBackward"


def test_detection_model_trains_through_reversible_backbone():
    cfg = {"nc": 2, "backbone": [[-1, 1, "RevCol", [TINY["channels"], TINY["layers"], 2]],
                                 [0, 1, "Index", [0]], [0, 1, "Index", [1]], [0, 1, "Index", [2]]],
           "head": [[[1, 2, 3], 1, "Detect", ["nc"]]]}
    model = DetectionModel(cfg).double().train()
    backbone = model.model[0]
    assert isinstance(backbone, RevCol) and backbone.save_memory
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    g_rev, _ = gradients(model, images)
    backbone.save_memory = False
    g_plain, _ = gradients(model, images)
    assert_same_gradients(g_rev, g_plain)


def test_eval_and_no_grad_take_the_plain_forward():
    net = tiny_revcol(True, dtype=torch.float32).eval()
    images = torch.randn(1, 3, 32, 32)
    out = net(images)
    assert type(out[0].grad_fn).__name__ != "ReversibleColumnsBackward"
    net.save_memory = False
    for a, b in zip(out, net(images)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    net.train().save_memory = True
    with torch.no_grad():
        assert all(o.grad_fn is None for o in net(images))


def test_reconstruction_error_float64_float32_bf16():
    net = tiny_revcol(False, columns=4, drop_path=0.0, dtype=torch.float64).eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    err64 = reconstruction_errors(net, images)
    err32 = reconstruction_errors(net.float(), images.float())
    err_bf16 = reconstruction_errors(net, images.float(), torch.bfloat16)
    assert len(err32) == 3 and max(err64) < 1e-10 and max(err32) < 1e-4
    assert len(err_bf16) == 3 and max(err_bf16) < 1e-2  # about bf16's resolution at worst (measured: ~1e-6)
    assert err32[0] >= err32[-1]  # error grows with every column rebuilt


def test_bf16_autocast_reversible_backward():
    images = torch.randn(2, 3, 32, 32)
    grads = {}
    for save_memory in (False, True):
        net = tiny_revcol(save_memory, dtype=torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grads[save_memory], _ = gradients(net, images)
    flat = {k: torch.cat([g.flatten() for g in v.values()]) for k, v in grads.items()}
    assert ((flat[True] - flat[False]).norm() / flat[False].norm()).item() < 1e-2


def _saved_bytes(columns: int, save_memory: bool) -> int:
    spec = importlib.util.spec_from_file_location("revcol_memory", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    net = tiny_revcol(save_memory, columns=columns, dtype=torch.float32)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    return bench.saved_bytes_of_step(net, optimizer, torch.randn(2, 3, 64, 64), amp=False)


def test_reversible_mode_keeps_activation_memory_flat():
    plain = {c: _saved_bytes(c, False) for c in (2, 4)}
    rev = {c: _saved_bytes(c, True) for c in (2, 4)}
    assert rev[4] <= plain[4] / 2
    assert rev[4] - rev[2] <= (plain[4] - plain[2]) / 10


@pytest.mark.parametrize("find_unused", [False, True])
def test_ddp_gradients_match_plain(tmp_path, find_unused):
    dist = torch.distributed
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reference = tiny_revcol(False)
        ddp = nn.parallel.DistributedDataParallel(tiny_revcol(True), find_unused_parameters=find_unused)
        images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
        for _ in range(2):  # an unready parameter would make the second iteration raise
            g_ddp, _ = gradients(ddp, images)
        g_ref, _ = gradients(reference, images)
        assert_same_gradients({k.removeprefix("module."): v for k, v in g_ddp.items()}, g_ref)
    finally:
        dist.destroy_process_group()


def test_alpha_magnitude_is_kept_above_floor():
    net = tiny_revcol(True, dtype=torch.float32)
    alpha = net.columns[1].levels[0].alpha
    with torch.no_grad():
        alpha.view(-1)[:3] = torch.tensor([0.0, -1e-5, 0.5])
    net(torch.randn(1, 3, 32, 32))
    assert alpha.view(-1)[:3].tolist() == pytest.approx([1e-3, -1e-3, 0.5])


def test_yaml_scales_and_declared_channels():
    with torch.device("meta"):  # structure only: no weights, no test forward
        (n, _, n_table, _), (s, _, s_table, _) = (build_layers(load_model_yaml(f"yolov8{scale}-revcol.yaml"))
                                                  for scale in "ns")
    assert n_table[0].channels == [48, 96, 192] and s_table[0].channels == [96, 192, 384]
    assert n[0].level_channels == [24, 48, 96, 192] and s[0].level_channels == [48, 96, 192, 384]
    assert n[0].layers == s[0].layers == [1, 1, 1, 1] and len(n[0].columns) == len(s[0].columns) == 3
    assert n[0].save_memory and n[0].anchor_every == 2


def test_paper_variant_row_is_not_width_scaled():
    cfg = {"nc": 2, "scales": {"n": [0.33, 0.25, 1024]}, "scale": "n",
           "backbone": [[-1, 1, "RevCol", ["T"]], [0, 1, "Index", [0]], [0, 1, "Index", [1]],
                        [0, 1, "Index", [2]]],
           "head": [[[1, 2, 3], 1, "Detect", ["nc"]]]}
    with torch.device("meta"):
        layers, _, table, _ = build_layers(cfg)
    backbone = layers[0]
    assert backbone.level_channels == [64, 128, 256, 512] and backbone.layers == [2, 2, 4, 2]
    assert len(backbone.columns) == 4 and table[0].channels == [128, 256, 512]


@pytest.mark.parametrize("args, message", [
    ([[96, 192, 384], [2, 2, 4, 2], 3], "channels must be a list of 4"),
    (["Q"], "unknown RevCol variant"),
    ([[96, 192, 384, 768], [2, 2, 4, 2], 0], "columns must be a positive int"),
    ([[96, 192, 384, 768], [2, 2, 4, 2], 3, "resnet"], "block must be one of"),
    ([[96, 192, 384, 768], [2, 2, 4, 2], 3, "c2f", 3, 0.1], "drop_path apply to convnext"),
    ([[96, 192, 384, 768], [2, 2, 4, 2], 3, "convnext", 3, 0.0, True, -1], "anchor_every must be an int >= 0"),
])
def test_bad_rows_name_the_problem(args, message):
    cfg = {"nc": 2, "backbone": [[-1, 1, "RevCol", args], [0, 1, "Index", [2]]],
           "head": [[-1, 1, "Conv", [8, 1]]]}
    with pytest.raises(ModelConfigError, match=message) as info:
        DetectionModel(cfg)
    assert "row 0" in str(info.value)


def test_input_size_must_be_divisible_by_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny_revcol(False, dtype=torch.float32)(torch.zeros(1, 3, 80, 96))


def test_c2f_levels_fuse_without_changing_outputs():
    net = tiny_revcol(True, block="c2f", drop_path=0.0, dtype=torch.float32)
    net(torch.randn(4, 3, 32, 32))  # non-trivial running statistics
    net.eval()
    model = nn.Sequential(net)
    images = torch.randn(1, 3, 32, 32)
    expected = net(images)
    fused = copy.deepcopy(model)
    fuse_modules(fused)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    for a, b in zip(fused(images), expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    model = DetectionModel("yolov8n-revcol.yaml")
    assert model.stride.tolist() == [8, 16, 32]
    y, fused, _ = assert_fuses_and_exports(model, tmp_path, imgsz=64)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert y.shape == (1, 84, 8 * 8 + 4 * 4 + 2 * 2)
