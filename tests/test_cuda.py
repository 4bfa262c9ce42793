"""CUDA paths against their CPU / float32 counterparts: AMP, channels-last, EMA, NMS, the assigner, validation,
ONNX export and onnxruntime's CUDA provider, torchrun with NCCL. Skipped without a GPU; benchmarks/gpu_check.sh
runs them on one."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tiny_training import TINY_MODEL, fixed_batch, tiny_dataset
from yololab.assigner import TaskAlignedAssigner
from yololab.engine.exporter import OnnxModel, export_onnx
from yololab.loss import DetectionLoss
from yololab.nn import DetectionModel
from yololab.ops import non_max_suppression
from yololab.utils.dist import free_port
from yololab.utils.torch_utils import ModelEMA

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)")]

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)
AMP_TOLERANCE = {torch.float16: 0.02, torch.bfloat16: 0.05}  # relative, on the loss parts (bf16 keeps 8 bits)


def seeded_model(device: torch.device = CUDA) -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(TINY_MODEL).to(device).train()


def loss_parts(model: DetectionModel, imgs: torch.Tensor, batch: dict, dtype: torch.dtype | None,
               channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One training forward (autocast in ``dtype`` when given) and the loss, as the trainer computes it."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        preds = model(imgs.to(CUDA))
    return DetectionLoss(model)(preds, batch)


def grad_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_amp_step_is_finite_and_close_to_float32(dtype, channels_last):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    imgs, batch = fixed_batch()
    reference, model = seeded_model(), seeded_model()
    loss32, parts32 = loss_parts(reference, imgs, batch, None)
    loss32.backward()
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)  # what the trainer uses for fp16
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(20):  # fp16: the scaler's first scales overflow; it skips those steps and lowers the scale
        optimizer.zero_grad()
        loss, parts = loss_parts(model, imgs, batch, dtype, channels_last)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = grad_vector(model)
        if torch.isfinite(grads).all():
            break
        scaler.step(optimizer)
        scaler.update()

    assert torch.isfinite(parts).all()
    torch.testing.assert_close(parts, parts32, rtol=AMP_TOLERANCE[dtype], atol=1e-3)
    grads32 = grad_vector(reference)
    assert torch.isfinite(grads).all()
    assert torch.nn.functional.cosine_similarity(grads, grads32, dim=0) > 0.95
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the step was not skipped


def test_ema_on_gpu_equals_ema_on_cpu():
    model = seeded_model()
    ema_gpu, ema_cpu = ModelEMA(model), ModelEMA(copy.deepcopy(model).cpu())
    imgs, batch = fixed_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        loss, _ = loss_parts(model, imgs, batch, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema_gpu.update(model)
        ema_cpu.update(copy.deepcopy(model).cpu())
    assert ema_gpu.updates == ema_cpu.updates == 3
    gpu_state, cpu_state = ema_gpu.state_dict(), ema_cpu.state_dict()
    assert all(v.device.type == "cuda" for v in gpu_state.values())
    for key, value in cpu_state.items():
        torch.testing.assert_close(gpu_state[key].cpu(), value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("multi_label", [False, True])
def test_nms_on_gpu_equals_cpu(multi_label):
    g = torch.Generator().manual_seed(0)
    nc, anchors = 5, 2000
    xy, wh = 640 * torch.rand(2, 2, anchors, generator=g), 10 + 90 * torch.rand(2, 2, anchors, generator=g)
    pred = torch.cat((xy, wh, torch.rand(2, nc, anchors, generator=g) ** 3), 1)  # mostly low scores, no ties
    on_cpu = non_max_suppression(pred, conf=0.1, iou=0.6, multi_label=multi_label)
    on_gpu = non_max_suppression(pred.to(CUDA), conf=0.1, iou=0.6, multi_label=multi_label)
    for cpu_kept, gpu_kept in zip(on_cpu, on_gpu):
        assert len(cpu_kept) > 10
        torch.testing.assert_close(gpu_kept.cpu(), cpu_kept, rtol=0, atol=1e-4)


def assigner_inputs(b: int = 2, m: int = 4, nc: int = 3, imgsz: int = 128, stride: int = 8):
    """Anchors on a stride grid, GT boxes, and predictions centred on the anchors with jittered sizes, so every
    candidate overlaps its GT and alignments do not tie."""
    g = torch.Generator().manual_seed(0)
    grid = torch.arange(stride / 2, imgsz, stride)
    anchors = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).view(-1, 2)
    a = len(anchors)
    centre, size = 30 + 68 * torch.rand(b, m, 2, generator=g), 24 + 40 * torch.rand(b, m, 2, generator=g)
    gt_bboxes = torch.cat((centre - size / 2, centre + size / 2), -1)
    pred_size = 30 + 20 * torch.rand(b, a, 2, generator=g)
    pred_bboxes = torch.cat((anchors - pred_size / 2, anchors + pred_size / 2), -1)
    pred_scores = torch.rand(b, a, nc, generator=g)
    gt_labels = torch.randint(0, nc, (b, m, 1), generator=g).float()
    mask_gt = torch.ones(b, m, 1)
    mask_gt[1, -1] = 0  # one padding row
    return pred_scores, pred_bboxes, anchors, gt_labels, gt_bboxes, mask_gt


def test_assigner_on_gpu_equals_cpu():
    assigner = TaskAlignedAssigner(topk=10, num_classes=3, min_size=16.0)
    inputs = assigner_inputs()
    on_cpu = assigner(*inputs)
    on_gpu = assigner(*(t.to(CUDA) for t in inputs))
    labels, boxes, scores, fg, gt_idx = on_cpu
    assert fg.sum() > 20
    for name, cpu_out, gpu_out in zip(("labels", "boxes", "scores", "fg", "gt_idx"), on_cpu, on_gpu):
        torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-5, atol=1e-6, msg=name)


def run_cli(*args: str, torchrun: bool = False) -> dict:
    """``python -m yololab`` (under ``torchrun --nproc_per_node 1`` if asked); its JSON line."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port())]
    cmd = [sys.executable, *(launcher if torchrun else []), "-m", "yololab", *args, "json=true"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT / "src"), os.environ.get("PYTHONPATH")))))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on the GPU by ``torchrun --nproc_per_node 1 -m yololab train``: (result, data, run dir)."""
    root = tmp_path_factory.mktemp("cuda-train")
    data = tiny_dataset(root / "data", overfit=True)
    model_yaml = root / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    result = run_cli("train", f"model={model_yaml}", f"data={data}", "device=0", "epochs=3", "imgsz=64", "batch=4",
                     "workers=2", "mosaic=0", "close_mosaic=0", "warmup_epochs=1", "nbs=8", "plots=false",
                     f"project={root / 'runs'}", "name=run", "exist_ok=true", torchrun=True)
    return result, data, root / "runs" / "run"


def test_torchrun_single_process_trains_on_gpu(trained):
    result, _, run_dir = trained
    assert result["epochs_run"] == 3 and result["train_images_per_s"] > 0
    rows = (run_dir / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    assert "nan" not in (run_dir / "results.csv").read_text().lower()
    assert (run_dir / "weights" / "best.pt").is_file()


def test_validation_on_gpu_equals_cpu(trained):
    _, data, run_dir = trained
    common = (f"model={run_dir / 'weights' / 'best.pt'}", f"data={data}", "imgsz=64", "batch=4", "workers=0",
              "plots=false")
    on_cpu, on_gpu = run_cli("val", *common, "device=cpu"), run_cli("val", *common, "device=0")
    for key in ("map", "map50", "map75", "aps", "apm", "apl", "precision", "recall"):
        if on_cpu.get(key) is not None:
            assert abs(on_gpu[key] - on_cpu[key]) <= 1e-3, (key, on_gpu[key], on_cpu[key])


NCCL_STEP = """
import json, torch
from torch import nn
from yololab.loss import DetectionLoss
from yololab.nn import DetectionModel
from yololab.utils import dist
import torch.distributed as td

device = torch.device("cuda", dist.local_rank())
dist.init_distributed(device)
torch.manual_seed(0)
model = DetectionModel(json.loads({model!r})).to(device).train()
ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
imgs = torch.rand(2, 3, 64, 64, device=device)
batch = {{"batch_idx": torch.tensor([0., 1.]), "cls": torch.tensor([0., 1.]),
          "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.4, 0.6, 0.2, 0.4]])}}
with torch.autocast("cuda", dtype=torch.bfloat16):
    preds = ddp(imgs)
loss, _ = DetectionLoss(model)(preds, batch)
loss.backward()
total = torch.ones(1, device=device)
td.all_reduce(total)
grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
print(json.dumps({{"backend": td.get_backend(), "world": td.get_world_size(), "loss": loss.item(),
                  "grads_finite": grads_finite, "all_reduce": total.item()}}))
dist.cleanup()
"""


def test_torchrun_nccl_ddp_step(tmp_path):
    script = tmp_path / "nccl_step.py"
    script.write_text(NCCL_STEP.format(model=json.dumps(TINY_MODEL)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT / "src"), os.environ.get("PYTHONPATH")))))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                           str(free_port()), str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "nccl" and result["world"] == 1 and result["all_reduce"] == 1.0
    assert result["grads_finite"] and result["loss"] > 0


def exported(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A CUDA model exported (fused) to ONNX, a check batch and the model's float32 output on it (TF32 off)."""
    model = seeded_model().eval()
    file = export_onnx(model, tmp_path / "tiny.onnx", 128, batch=2)
    imgs = fixed_batch(n=2)[0]
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        expected = model(imgs.to(CUDA)).cpu()
    return file, imgs, expected


def relative_difference(output: torch.Tensor, expected: torch.Tensor) -> float:
    return float((output - expected).abs().max() / expected.abs().max())


def test_onnx_export_of_a_cuda_model_matches_pytorch(tmp_path):
    file, imgs, expected = exported(tmp_path)
    assert relative_difference(OnnxModel(file)(imgs), expected) < 1e-4


def test_onnx_runtime_cuda_provider_matches_pytorch(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (onnxruntime-gpu is not installed)")
    file, imgs, expected = exported(tmp_path)
    onnx_model = OnnxModel(file, CUDA)
    assert onnx_model.session.get_providers()[0] == "CUDAExecutionProvider"
    assert relative_difference(onnx_model(imgs), expected) < 1e-3  # onnxruntime's CUDA convolutions may use TF32
