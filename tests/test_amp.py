"""The amp setting: what auto/true/false/bf16 do on CPU and CUDA, bf16 autocast training on CPU against float32,
the refusal where bf16 would be emulated, and the reuse of comparison runs recorded before amp=auto existed."""

import json
from pathlib import Path

import pytest
import torch

from conftest import FIRST_ABLATION_RUNS
from tiny_training import TINY_MODEL, fixed_batch, tiny_dataset, tiny_settings
from yololab.ablation.runner import recorded_recipe, same_recipe
from yololab.cfg import ConfigError, settings
from yololab.checkpoint import load_checkpoint
from yololab.cli import main
from yololab.engine import trainer as trainer_module
from yololab.engine.trainer import Trainer
from yololab.loss import DetectionLoss
from yololab.nn import DetectionModel
from yololab.utils.files import to_jsonable
from yololab.utils.profile import native_bf16_flags
from yololab.utils.torch_utils import resolve_amp, same_amp

BF16_LOSS_RTOL = 0.05  # relative, on each loss part: bf16 keeps 8 significant bits in the convolutions
needs_native_bf16 = pytest.mark.skipif(not native_bf16_flags(),
                                       reason="this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)")


@pytest.mark.parametrize(("amp", "cpu", "cuda"), [("auto", "false", "true"), ("true", "false", "true"),
                                                  (True, "false", "true"), ("false", "false", "false"),
                                                  (False, "false", "false"), ("bf16", "bf16", "bf16")])
def test_amp_setting_resolves_per_device(amp, cpu, cuda):
    assert (resolve_amp(amp, "cpu"), resolve_amp(amp, "cuda")) == (cpu, cuda)


def test_amp_keeps_the_old_booleans_and_rejects_other_values():
    assert settings("train", {}).amp == "auto"
    assert settings("train", {"amp": True}).amp == "true"
    assert settings("train", {"amp": "BF16"}).amp == "bf16"
    with pytest.raises(ConfigError, match="amp must be auto, true, false or bf16"):
        settings("train", {"amp": "fp8"})


def test_recorded_amp_true_means_auto_but_not_bf16_or_false():
    assert same_amp(True, "auto") and same_amp("true", "auto")
    assert not same_amp(True, "bf16") and not same_amp(True, False)
    recorded = {"amp": True, "epochs": 30}
    assert same_recipe(recorded, {"amp": "auto", "epochs": 30})
    assert not same_recipe(recorded, {"amp": "bf16", "epochs": 30})
    assert not same_recipe(recorded, {"amp": "auto", "epochs": 31})
    assert not same_recipe({"epochs": 30}, {"amp": "auto", "epochs": 30})  # a recipe without amp is another one


def test_committed_ablation_runs_are_reused_with_amp_auto():
    results = sorted(FIRST_ABLATION_RUNS.glob("*/result.json"))
    if not results:
        pytest.skip(f"no finished runs in {FIRST_ABLATION_RUNS}")
    for result_file in results:
        result = json.loads(result_file.read_text())
        recorded = recorded_recipe(result_file.parent, result)
        assert recorded["amp"] is True, result_file  # recorded before amp=auto existed
        wanted = {**to_jsonable(result["recipe"]), "amp": "auto"}  # what the same compare command pins today
        assert same_recipe(recorded, wanted), result_file


def training_step(dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss parts and gradients of one channels-last training step, the forward autocast in ``dtype`` (the
    trainer's step: autocast around the model only, the loss in float32)."""
    torch.manual_seed(0)
    model = DetectionModel(TINY_MODEL).train().to(memory_format=torch.channels_last)
    imgs, batch = fixed_batch()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        preds = model(imgs.contiguous(memory_format=torch.channels_last))
    loss, parts = DetectionLoss(model)(preds, batch)
    loss.backward()
    assert loss.dtype == torch.float32
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights in float32
    return parts, grads


def test_bf16_autocast_step_is_close_to_float32():
    parts32, grads32 = training_step(None)
    parts16, grads16 = training_step(torch.bfloat16)
    assert torch.isfinite(parts16).all() and torch.isfinite(grads16).all()
    torch.testing.assert_close(parts16, parts32, rtol=BF16_LOSS_RTOL, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.95


def test_amp_bf16_is_refused_on_a_cpu_without_native_bf16(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer_module, "native_bf16_flags", lambda: [])
    data = tiny_dataset(tmp_path / "data")
    with pytest.raises(ConfigError, match="amp=bf16 needs CUDA or a CPU with native bfloat16"):
        Trainer(tiny_settings(data, tmp_path / "runs", amp="bf16"), model=DetectionModel(TINY_MODEL))
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made
    args = ["train", "model=yolov8n.yaml", f"data={data}", "device=cpu", f"project={tmp_path / 'runs'}", "amp=bf16"]
    assert main(args) == 2  # a user error: its message, no traceback
    assert "amp=bf16 needs CUDA or a CPU with native bfloat16" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "offer"), [(["avx512_bf16"], "this CPU has avx512_bf16: amp=bf16 trains faster"),
                                              ([], "this CPU has no native bf16, where amp=bf16 is refused")])
def test_amp_auto_trains_float32_on_cpu_and_says_whether_bf16_is_on_offer(tmp_path, monkeypatch, flags, offer):
    monkeypatch.setattr(trainer_module, "native_bf16_flags", lambda: flags)
    data = tiny_dataset(tmp_path / "data")
    trainer = Trainer(tiny_settings(data, tmp_path / "runs"), model=DetectionModel(TINY_MODEL))
    assert trainer.amp_dtype is None
    assert trainer.amp_note.startswith(f"AMP: off, float32 (amp=auto on cpu; {offer}")


@needs_native_bf16
def test_one_epoch_with_amp_bf16_trains_and_saves_float32(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    trainer = Trainer(tiny_settings(data, tmp_path / "runs", amp="bf16", epochs=1), model=DetectionModel(TINY_MODEL))
    assert trainer.amp_dtype == torch.bfloat16
    assert trainer.amp_note.startswith("AMP: bfloat16 autocast (amp=bf16, CPU has ")
    result = trainer.train()
    assert result["epochs_run"] == 1
    for name in ("best.pt", "last.pt"):
        weights = load_checkpoint(Path(result["save_dir"]) / "weights" / name)["model"]
        floats = [v for v in weights.values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floats)
