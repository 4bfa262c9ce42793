"""compile=true: torch.compile of the training forward and of the predictor's model, and its clean fallback (a
logged reason, the run goes on uncompiled) for plug-in modules, RevCol's reversible autograd function and
compiler failures."""

import textwrap
from pathlib import Path

import pytest
import torch
from torch._dynamo.exc import TorchDynamoException

from tiny_training import TINY_MODEL, tiny_dataset, tiny_settings
from yololab.cfg import settings
from yololab.checkpoint import load_checkpoint
from yololab.engine.predictor import as_inference_model
from yololab.engine.trainer import Trainer
from yololab.errors import UserError
from yololab.nn import DetectionModel
from yololab.plugins import load_plugins
from yololab.utils.torch_utils import CompiledModel, compile_blocker

REVCOL_MODEL = {"nc": 2, "backbone": [[-1, 1, "RevCol", [[8, 16, 24, 32], [1, 2, 1, 1], 2]],
                                      [0, 1, "Index", [0]], [0, 1, "Index", [1]], [0, 1, "Index", [2]]],
                "head": [[[1, 2, 3], 1, "Detect", ["nc"]]]}
COMPILED_ATOL = 1e-4  # inductor fuses and reorders float32 arithmetic: outputs agree to rounding


def plugin_model(tmp_path, class_name: str, own_reason: str = "") -> DetectionModel:
    """A tiny detector whose second row is a plug-in module ``class_name`` loaded from a file in ``tmp_path``."""
    plugin = tmp_path / f"{class_name.lower()}.py"
    plugin.write_text(textwrap.dedent(f"""
        from torch import nn
        import yololab
        from yololab.nn.conv import Conv

        @yololab.register
        class {class_name}(nn.Module):
            '''Two 3x3 convs (a user's plug-in).'''
            {own_reason}
            def __init__(self, c1, c2, s=1):
                super().__init__()
                self.a, self.b = Conv(c1, c2, 3, s), Conv(c2, c2, 3)
            def forward(self, x):
                return self.b(self.a(x))
    """))
    load_plugins(str(plugin))
    cfg = {"nc": 2, "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, class_name, [32, 2]], [-1, 1, "Conv", [32, 3, 2]]],
           "head": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [[2, 3, 4], 1, "Detect", ["nc"]]]}
    return DetectionModel(cfg)


def test_compile_is_a_train_and_predict_setting():
    assert settings("train", {}).compile is False and settings("predict", {"compile": True}).compile is True


def test_plugin_module_runs_uncompiled_with_the_reason(tmp_path):
    model = plugin_model(tmp_path, "CompileCheckConv").eval()
    logs: list[str] = []
    forward = CompiledModel(model, logs.append)
    assert forward.compiled is None
    assert logs == [f"compile=true: running uncompiled, {compile_blocker(model)}"]
    assert "CompileCheckConv" in logs[0] and "compilecheckconv.py" in logs[0] and "compile_unsupported = None" in logs[0]
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(forward(x), model(x), rtol=0, atol=0)


def test_plugin_module_may_declare_itself_compilable(tmp_path):
    model = plugin_model(tmp_path, "CompilableConv", own_reason="compile_unsupported = None")
    assert compile_blocker(model) is None


def test_revcol_training_runs_uncompiled_and_its_eval_forward_may_compile():
    model = DetectionModel(REVCOL_MODEL).train()
    assert "RevCol" in compile_blocker(model) and "reversible autograd function" in compile_blocker(model)
    assert compile_blocker(model.eval()) is None  # eval takes the plain forward
    model.model[0].save_memory = False
    assert compile_blocker(model.train()) is None


def test_compiler_failure_falls_back_to_the_plain_model(monkeypatch):
    class CompilerFailed(TorchDynamoException):
        pass

    def failing_compile(model, **kwargs):
        def call(*args):
            raise CompilerFailed("inductor could not build this graph\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", failing_compile)
    model = DetectionModel(TINY_MODEL).eval()
    logs: list[str] = []
    forward = CompiledModel(model, logs.append)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(forward(x), model(x), rtol=0, atol=0)
    assert forward.compiled is None
    assert logs == ["compile=true: running uncompiled, torch.compile failed (CompilerFailed: inductor could not "
                    "build this graph)"]


def test_training_with_compile_and_a_plugin_runs_uncompiled(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    model = plugin_model(tmp_path, "TrainPluginConv")
    trainer = Trainer(tiny_settings(data, tmp_path / "runs", compile=True, epochs=1, verbose=True), model=model)
    assert trainer.train()["epochs_run"] == 1
    assert trainer.forward.compiled is None
    assert "compile=true: running uncompiled, model.1 (TrainPluginConv): a plug-in module" in capsys.readouterr().out


@pytest.mark.slow  # inductor compiles forward and backward graphs: about a minute of CPU
def test_compiled_model_matches_eager_in_training_and_prediction():
    torch.manual_seed(0)
    model = DetectionModel(TINY_MODEL).train()
    images = torch.rand(2, 3, 64, 64)
    logs: list[str] = []
    forward = CompiledModel(model, logs.append)
    compiled = forward(images)
    eager = model(images)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=COMPILED_ATOL)
    sum(c.sum() for c in compiled).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    sum(e.sum() for e in eager).backward()
    for g, p in zip(grads, (p for p in model.parameters() if p.grad is not None)):
        torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-3)
    assert logs and logs[0].startswith("compile=true: forward compiled in ")

    runner, plain = as_inference_model(model, compile=True), as_inference_model(model)
    image = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(runner(image), plain(image), rtol=1e-4, atol=COMPILED_ATOL)


def test_compile_of_an_onnx_model_is_a_clear_error():
    with pytest.raises(UserError, match="compile=true applies to PyTorch models, not to model.onnx"):
        as_inference_model("model.onnx", compile=True)


@pytest.mark.slow  # inductor compiles the tiny model's training graphs: minutes of CPU
def test_training_with_compile_logs_the_compile_time_and_saves_plain_weights(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    trainer = Trainer(tiny_settings(data, tmp_path / "runs", compile=True, epochs=1, verbose=True),
                      model=DetectionModel(TINY_MODEL))
    result = trainer.train()
    log = capsys.readouterr().out
    assert trainer.forward.compiled is not None  # it did not fall back
    assert "compile=true: forward compiled in " in log and "compile=true: first training step " in log
    weights = load_checkpoint(Path(result["save_dir"]) / "weights" / "last.pt")["model"]
    assert set(weights) == set(DetectionModel(TINY_MODEL).state_dict())  # no compiled-module prefixes
