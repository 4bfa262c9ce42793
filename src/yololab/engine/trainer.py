"""Training engine: optimizer and schedule, warm-up, accumulation, AMP, EMA, validation, checkpoints, resume, DDP."""

from __future__ import annotations

import csv
import gzip
import json
import math
import resource
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from ..autoanchor import check_anchors
from ..cfg import ConfigError, Settings, command_keys
from ..cfg import settings as cfg_settings
from ..cfg.recipe import family_overrides, recipe_name
from ..checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..data import (
    DataConfig,
    YoloDataset,
    build_dataloader,
    load_data_config,
    plot_label_distribution,
    unlabelled_split,
)
from ..errors import UserError
from ..health import RunHealth, sample_images
from ..loss import build_loss
from ..nn import DetectionModel
from ..plots import plot_training_curves
from ..utils import dist
from ..utils.files import RunLock, remove_stale_temp_files, run_dir, to_jsonable, write_atomic
from ..utils.profile import NATIVE_BF16_FLAGS, machine_summary, native_bf16_flags
from ..utils.torch_utils import (
    CompiledModel,
    ModelEMA,
    init_seeds,
    parameter_groups,
    resolve_amp,
    rng_states,
    select_device,
    set_rng_states,
    transfer_weights,
    unwrap,
)
from .preprocess import check_imgsz
from .validator import validate

# Settings a resumed run takes from the user when set to a non-default value (the rest come from the checkpoint).
RESUME_OVERRIDES = ("device", "workers", "json", "verbose", "compile")
METRIC_AND_LR_COLUMNS = ("lr/pg0", "lr/pg1", "lr/pg2", "metrics/precision", "metrics/recall", "metrics/mAP50",
                         "metrics/mAP50-95", "metrics/APs", "metrics/APm", "metrics/APl")
# Learning rate of each optimizer when lr0 is not set.
DEFAULT_LR = {"sgd": 0.01, "adamw": 0.001}
METRIC_COLUMNS = {"metrics/precision": "precision", "metrics/recall": "recall", "metrics/mAP50": "map50",
                  "metrics/mAP50-95": "map", "metrics/APs": "aps", "metrics/APm": "apm", "metrics/APl": "apl"}


class TrainingError(UserError):
    """Training cannot go on (non-finite loss, nothing to resume); the message says why and what to try."""


EpochHook = Callable[["Trainer"], None]


class Trainer:
    """Train a DetectionModel from ``yololab train`` settings (typed ``Settings``, or a mapping of keys to validate).

    ``model`` may be given as an ``nn.Module`` (e.g. from ``YOLO(...)``), which trains from its weights, or as a model
    config dict, built like a YAML file under the run's seed; otherwise ``settings["model"]`` is a model YAML or a
    checkpoint whose weights are the starting point. ``on_epoch_end`` hooks run after each
    epoch's checkpoint is written (rank 0 and other ranks alike).
    """

    def __init__(self, settings: Mapping[str, Any], model: nn.Module | dict | None = None,
                 on_epoch_end: list[EpochHook] | None = None):
        settings = settings if isinstance(settings, Settings) else cfg_settings("train", settings)
        self.resume_ckpt: dict | None = None
        if settings.resume:
            self.resume_ckpt, settings = _resume_settings(settings)
        self.args: Settings = settings
        self.hooks = list(on_epoch_end or [])
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = dist.is_main()
        self.device = self._device()
        if self.rank >= 0:  # launched by torchrun, with one process too (its sampler needs the process group)
            dist.init_distributed(self.device)
        init_seeds(self.args.seed, self.args.deterministic)  # same initial weights on every rank
        self.data: DataConfig = load_data_config(self.args.data)
        for split in ("train", "val") if self.args.val else ("train",):
            if not self.data.split(split):
                hint = "; val=false trains without validation" if split == "val" else ""
                raise TrainingError(f"{self.data.yaml_file or self.data.root} has no {split} images (its '{split}:' "
                                    f"entry is missing or empty{hint})")
        self.model = self._build_model(model)
        if self.resume_ckpt is None:  # a resumed run keeps the settings its checkpoint recorded
            self.args = self._with_family_recipe()
        check_imgsz(self.args.imgsz, int(max(self.model.stride)))
        self.amp_dtype, self.amp_note = self._amp()
        self.save_dir = self._save_dir()  # created once the settings, data and model are known to be usable
        self.wdir = self.save_dir / "weights"
        self.lock: RunLock | None = None
        self.epoch, self.best_fitness, self.metrics = 0, -1.0, {}
        self.epochs_without_improvement = 0
        self.train_time = 0.0

    # --- set-up
    def _device(self) -> torch.device:
        device = self.args.device
        text = "" if device is None else str(device)
        if self.world > 1 and text.lower() != "cpu" and torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return select_device(text.split(",")[0] if "," in text else device)

    def _save_dir(self) -> Path:
        if self.resume_ckpt is not None:
            return Path(self.args.resume).resolve().parent.parent  # run/weights/last.pt -> run
        # rank 0 picks the folder: another rank could otherwise see rank 0's new folder and number its own
        save_dir = Path(dist.from_rank0(str(run_dir(self.args.project, self.args.name or "train",
                                                     self.args.exist_ok))))
        if self.main:
            (save_dir / "weights").mkdir(parents=True, exist_ok=True)
        return save_dir

    def _refuse_unlabelled(self, split: str, dataset: YoloDataset) -> None:
        """Stop before the first epoch when a split has no box to learn from or score against."""
        problem = unlabelled_split(dataset.labels, dataset.report)
        if problem:
            raise TrainingError(f"the {split} split of {self.data.yaml_file or self.data.root}: {problem}; "
                                "`yololab check-data` lists every problem")

    def _lock_save_dir(self) -> RunLock | None:
        """Rank 0 holds the run folder's lock until training ends (a second writer stops at once); files that an
        interrupted checkpoint write left behind are removed then."""
        if not self.main:
            return None
        lock = RunLock(self.save_dir).acquire()
        for folder in (self.save_dir, self.wdir):
            for path in remove_stale_temp_files(folder):
                self.log(f"removed {path}, left by an interrupted write")
        return lock

    def _build_model(self, model: nn.Module | dict | None) -> DetectionModel:
        source = self.args.model
        if self.resume_ckpt is not None:
            model = DetectionModel(self.resume_ckpt["meta"]["model_yaml"])
        elif model is None and str(source).endswith(".pt"):
            model = model_from_checkpoint(source)  # its weights are the starting point
        elif model is None or isinstance(model, dict):
            model = DetectionModel(source if model is None else model, nc=self.data.nc)
        if model.nc != self.data.nc:  # same architecture, the dataset's classes: keep the tensors that fit
            old, model = model, DetectionModel(model.yaml, nc=self.data.nc)
            self._report_transfer(model, old.state_dict(), f"the {old.nc}-class model")
        if self.args.pretrained and self.resume_ckpt is None:
            self._report_transfer(model, load_checkpoint(self.args.pretrained)["model"], self.args.pretrained)
        model.names = dict(self.data.names)
        for name, p in model.named_parameters():
            p.requires_grad_(".dfl." not in name)  # the DFL ramp stays fixed
        return model.float().train()

    def _with_family_recipe(self) -> Settings:
        """The settings with the model family's recipe (``cfg/recipes/``) for every key the user did not set: a key
        the user sets wins, then the family's recipe, then default.yaml."""
        overrides = family_overrides(self.model.yaml, self.args.given)
        if overrides:
            name = recipe_name(self.model.yaml)
            self.log(f"recipe: {name} (cfg/recipes/{name}.yaml) for {len(overrides)} settings you did not set")
        return self.args.replace(**overrides)

    def _report_transfer(self, model: nn.Module, state: dict, source: Any) -> None:
        loaded, skipped = transfer_weights(model, state)
        self.log(f"pretrained: {len(loaded)}/{len(model.state_dict())} tensors copied from {source}, "
                 f"{len(skipped)} kept their initial values" + (f" (e.g. {', '.join(skipped[:3])})" if skipped else ""))

    def log(self, text: str) -> None:
        if self.main and self.args.verbose:
            tqdm.write(text)

    def setup(self) -> None:
        """Build the data loaders, optimizer, schedule, EMA and loss (and restore them when resuming)."""
        a = self.args
        world = self.world
        self.batch = max(a.batch // world, 1)
        self.accumulate = max(round(a.nbs / (self.batch * world)), 1)
        self.model.to(self.device, memory_format=torch.channels_last)  # faster convolutions (benchmarks/train_step.py)
        if a.sync_bn and world > 1:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:
                self.log("sync_bn=true has no effect on CPU (SyncBatchNorm needs CUDA): BatchNorms stay per process")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        stride = int(max(self.model.stride))
        train_set = YoloDataset(self.data.train, imgsz=a.imgsz, augment=True, hyp=a, batch_size=self.batch,
                                stride=stride, cache=a.cache, nc=self.data.nc)
        self._refuse_unlabelled("train", train_set)
        self.train_loader = build_dataloader(train_set, self.batch, workers=a.workers, shuffle=True,
                                             seed=a.seed, rank=self.rank)
        if a.autoanchor and self.resume_ckpt is None:  # before the loss and EMA copy the anchors
            check_anchors(self.model, train_set.labels, a.imgsz, a.anchor_t, seed=a.seed, log=self.log)
        if self.main and a.plots:
            plot_label_distribution(train_set.labels, self.data.names, self.save_dir / "labels.png", a.imgsz)
        self.val_loader = None
        if self.main and a.val:
            val_batch = self.batch * 2
            val_set = YoloDataset(self.data.val, imgsz=a.imgsz, rect=True, batch_size=val_batch, stride=stride,
                                  cache=a.cache, nc=self.data.nc)
            self._refuse_unlabelled("val", val_set)
            self.val_loader = build_dataloader(val_set, val_batch, workers=a.workers)
        self.optimizer = self._build_optimizer(len(train_set))
        self.lf = lr_lambda(a.cos_lr, a.lrf, a.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.loss_fn = build_loss(self.model, a)
        if world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.ema = ModelEMA(self.model) if a.ema else None
        self.forward = CompiledModel(self.model, self.log) if a.compile else self.model  # shares self.model's weights
        self.start_epoch = 0
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
        self.health = (RunHealth(self.save_dir, sample_images(self.val_loader.dataset), self.start_epoch)
                       if self.val_loader is not None else None)

    def _amp(self) -> tuple[torch.dtype | None, str]:
        """The autocast dtype of the model forward (None: float32) and a line saying why; amp=bf16 is refused where
        it would be emulated. The loss, assigner, EMA and metrics always run in float32."""
        amp, device = resolve_amp(self.args.amp, self.device.type), self.device.type
        given = f"amp={self.args.amp}"
        if amp == "false":
            return None, f"AMP: off, float32 ({given} on {device}{self._bf16_hint() if device == 'cpu' else ''})"
        if amp == "true":
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16, f"AMP: bfloat16 autocast ({given} on cuda)"
            return torch.float16, f"AMP: float16 autocast with a gradient scaler ({given} on cuda)"
        if device == "cuda":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError(f"amp=bf16: {torch.cuda.get_device_name(self.device)} has no bfloat16; "
                                  "use amp=auto (float16 with a gradient scaler)")
            return torch.bfloat16, "AMP: bfloat16 autocast (amp=bf16 on cuda)"
        flags = native_bf16_flags()
        if device != "cpu" or not flags:
            raise ConfigError(f"amp=bf16 needs CUDA or a CPU with native bfloat16 ({' or '.join(NATIVE_BF16_FLAGS)} "
                              f"in /proc/cpuinfo); device {self.device} has none, where bf16 would be slower than "
                              "float32: use amp=auto")
        return torch.bfloat16, f"AMP: bfloat16 autocast (amp=bf16, CPU has {', '.join(flags)})"

    @staticmethod
    def _bf16_hint() -> str:
        """What a float32 CPU run's AMP line adds: whether this CPU could train in bfloat16 (amp=bf16)."""
        flags = native_bf16_flags()
        if flags:
            return f"; this CPU has {', '.join(flags)}: amp=bf16 trains faster in bfloat16 autocast"
        return "; this CPU has no native bf16, where amp=bf16 is refused"

    def _build_optimizer(self, n_images: int) -> torch.optim.Optimizer:
        a = self.args
        name, lr0, momentum = a.optimizer, a.lr0, a.momentum
        weight_decay = a.weight_decay * self.batch * self.world * self.accumulate / a.nbs
        if name.lower() == "auto":
            name, lr0, momentum = self._auto_optimizer(n_images)
        lr0 = resolve_lr0(name, lr0)
        groups = parameter_groups(unwrap(self.model), weight_decay)
        if name.lower() == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr0, momentum=momentum, nesterov=True)
        else:
            optimizer = torch.optim.AdamW(groups, lr=lr0, betas=(momentum, 0.999))
        self.args = self.args.replace(optimizer=name, lr0=lr0, momentum=momentum)
        self.log(f"optimizer: {name}(lr={lr0:g}, momentum={momentum:g}) with {len(groups[0]['params'])} weights "
                 f"(decay {weight_decay:g}), {len(groups[1]['params'])} norm weights and {len(groups[2]['params'])} "
                 f"biases (no decay); batch {self.batch * self.world}, accumulate {self.accumulate}")
        return optimizer

    def _auto_optimizer(self, n_images: int) -> tuple[str, float, float]:
        """SGD for long schedules (> 10k iterations), AdamW otherwise; a given lr0 is always kept."""
        a = self.args
        iterations = math.ceil(n_images / max(self.batch * self.world, a.nbs)) * a.epochs
        user_lr = a.lr0 is not None
        if iterations > 10_000:
            name, lr, momentum = "SGD", resolve_lr0("SGD", a.lr0), 0.9
        else:
            name, momentum = "AdamW", 0.9
            lr = a.lr0 if user_lr else round(0.002 * 5 / (4 + self.data.nc), 6)
            self.args = self.args.replace(warmup_bias_lr=0.0)
        why = "your lr0" if user_lr else ("lr 0.002 * 5 / (4 + nc) since lr0 is not set" if name == "AdamW"
                                          else "SGD's default lr since lr0 is not set")
        self.log(f"optimizer=auto: {iterations} iterations -> {name}(lr={lr:g}, momentum={momentum}) with {why}"
                 + ("; warmup_bias_lr set to 0" if name == "AdamW" else "") + ". Set optimizer= to pin it.")
        return name, lr, momentum

    # --- training
    def train(self) -> dict[str, Any]:
        """Run the schedule; returns the final metrics (of best.pt when validating) plus run facts."""
        self.lock = self._lock_save_dir()
        self.setup()
        a = self.args
        epochs = a.epochs
        if self.main:
            _write_yaml(self.save_dir / "args.yaml", a)
            # a fresh run in a reused folder starts a new table; a resumed one drops rows after its checkpoint
            _truncate_csv(self.save_dir / "results.csv", self.start_epoch, result_columns(self.loss_fn.part_names))
        nb = len(self.train_loader)
        warmup_iters = max(round(a.warmup_epochs * nb), a.warmup_min_iters) if a.warmup_epochs > 0 else -1
        self.log(f"training {self.save_dir} for {epochs} epochs: {len(self.train_loader.dataset)} train images, "
                 f"{nb} batches of {self.batch} per process x {self.world}, device {self.device}")
        self.log(self.amp_note)
        self.log(f"machine: {machine_summary()}")
        epoch_times, train_times = [], []  # whole epochs; their training part (loading, forward, backward, step)
        try:
            for epoch in range(self.start_epoch, epochs):
                self.epoch = epoch
                t0 = time.time()
                losses = self._train_one_epoch(epoch, epochs, nb, warmup_iters)
                train_times.append(time.time() - t0)
                lrs = [g["lr"] for g in self.optimizer.param_groups]
                self.scheduler.step()
                stop = self._end_epoch(epoch, losses, lrs, train_times[-1])
                epoch_times.append(time.time() - t0)
                for hook in self.hooks:
                    hook(self)
                if dist.from_rank0(stop):
                    break
            result = self._finish(epoch_times, train_times)
        finally:
            dist.cleanup()
            if self.lock is not None:
                self.lock.release()
        return result

    def _train_one_epoch(self, epoch: int, epochs: int, nb: int, warmup_iters: int) -> list[float]:
        a = self.args
        model, dataset = self.model, self.train_loader.dataset
        close_at = epochs - a.close_mosaic
        if a.close_mosaic > 0 and epoch >= close_at and epoch in (close_at, self.start_epoch):
            dataset.close_mosaic()
            self.log("closing mosaic and mixup for the last epochs")
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(epoch)
        model.train()
        mean = torch.zeros(3)
        last_step, accumulate = -1, self.accumulate
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(self.train_loader, total=nb, desc=f"epoch {epoch + 1}/{epochs}", disable=not self.main,
                   leave=True, dynamic_ncols=True, bar_format="{l_bar}{bar:12}{r_bar}")
        for i, batch in enumerate(bar):
            t_step, ni = time.perf_counter(), i + nb * epoch
            if ni <= warmup_iters:
                accumulate = self._warm_up(ni, warmup_iters, epoch)
            imgs = batch["img"].to(self.device, non_blocking=True, memory_format=torch.channels_last).float().div_(255)
            step = i - last_step >= accumulate or i == nb - 1  # accumulated gradients never cross epochs
            with (nullcontext() if step or self.world == 1 else model.no_sync()):
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    preds = self.forward(imgs)
                loss, parts = self.loss_fn(preds, batch)
                values = parts.tolist()
                if not math.isfinite(loss.item()):
                    raise TrainingError(
                        f"the loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1} ({', '.join(self.loss_fn.part_names)} = "
                        f"{values}); stopped without writing a checkpoint (the last good one is "
                        f"{self.wdir / 'last.pt'}). Try a lower lr0, amp=false, or check the labels.")
                self.scaler.scale(loss * self.world).backward()  # DDP averages gradients; keep per-batch sums
            if i == 0 and epoch == self.start_epoch and getattr(self.forward, "compiled", None) is not None:
                self.log(f"compile=true: first training step {time.perf_counter() - t_step:.1f} s (compiling the "
                         "forward and backward graphs)")
            if step:
                self._optimizer_step()
                last_step = i
            mean = (mean * i + torch.tensor(values)) / (i + 1)
            if self.main:
                losses = " ".join(f"{p} {v:.3f}" for p, v in zip(self.loss_fn.part_names, mean.tolist()))
                bar.set_postfix_str(f"{losses} {_memory(self.device)} {imgs.shape[-1]}px", refresh=False)
        bar.close()
        return mean.tolist()

    def _warm_up(self, ni: int, warmup_iters: int, epoch: int) -> int:
        """Ramp accumulation, learning rates (biases down from warmup_bias_lr) and momentum; returns accumulate."""
        a = self.args
        xp = [0, warmup_iters]
        for group in self.optimizer.param_groups:
            start = a.warmup_bias_lr if group["name"] == "bias" else 0.0
            group["lr"] = float(np.interp(ni, xp, [start, group["initial_lr"] * self.lf(epoch)]))
            momentum = float(np.interp(ni, xp, [a.warmup_momentum, a.momentum]))
            if "momentum" in group:
                group["momentum"] = momentum
            elif "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
        return max(1, round(float(np.interp(ni, xp, [1, self.accumulate]))))

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.health is not None:
            self.health.check_gradients(self.model)
        if self.args.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.args.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def _end_epoch(self, epoch: int, losses: list[float], lrs: list[float], seconds: float) -> bool:
        """Validate, log, checkpoint (rank 0); returns True when early stopping says stop."""
        self.train_time += seconds
        if not self.main:
            return False
        a = self.args
        epochs = a.epochs
        final_epoch = epoch + 1 == epochs
        if self.val_loader is not None:
            if a.bn_calibration > 0:  # running statistics lag fast-moving weights: recompute them (issue #24)
                with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):  # drop path
                    update_bn(self._calibration_batches(epoch), self.eval_model, self.device)
            self.metrics = validate(self.eval_model, self.data, imgsz=a.imgsz, batch=self.batch * 2, iou=a.iou,
                                    device=self.device, dataloader=self.val_loader, verbose=False,
                                    workers=a.workers)
        fitness = float(self.metrics["map"]) if self.metrics else -sum(losses)  # lower loss is better without val
        improved = fitness > self.best_fitness
        if improved:
            self.best_fitness, self.epochs_without_improvement = fitness, 0
        else:
            self.epochs_without_improvement += 1
        parts = self.loss_fn.part_names
        row = {"epoch": epoch + 1, **{f"train/{p}_loss": v for p, v in zip(parts, losses)},
               **{f"lr/pg{i}": lr for i, lr in enumerate(lrs)},
               **{col: self.metrics.get(key) for col, key in METRIC_COLUMNS.items()}, "time": round(self.train_time, 2)}
        _append_csv(self.save_dir / "results.csv", row, result_columns(parts))
        if self.health is not None:
            for warning in self.health.end_epoch(epoch + 1, unwrap(self.model), self.ema.ema if self.ema else None):
                self.log(warning)
        self.log(_epoch_line(row, parts, self.val_loader is not None))
        self._save(epoch, improved, final_epoch)
        patience = a.patience
        stop = patience > 0 and self.epochs_without_improvement >= patience
        if stop and not final_epoch:
            self.log(f"early stop: no improvement in the last {patience} epochs (best mAP50-95 "
                     f"{self.best_fitness:.4f}); set patience= to train longer")
        return stop

    def _calibration_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """The first ``bn_calibration`` training images, augmented as this epoch's were (mosaic closed or not) by a
        generator of their own, so the training stream is untouched."""
        dataset = self.train_loader.dataset
        stream, dataset.rng = dataset.rng, np.random.default_rng([self.args.seed, epoch])
        try:
            images = torch.stack([dataset[i]["img"] for i in range(min(self.args.bn_calibration, len(dataset)))])
        finally:
            dataset.rng = stream
        return (b.float() / 255 for b in images.split(self.batch))

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.ema if self.ema is not None else unwrap(self.model)

    # --- checkpoints
    def _meta(self, epoch: int) -> dict[str, Any]:
        model = unwrap(self.model)
        return {"model_yaml": to_jsonable(model.yaml), "names": {str(k): v for k, v in model.names.items()},
                "args": to_jsonable(self.args), "epoch": epoch + 1, "metrics": to_jsonable(self.metrics),
                "best_fitness": self.best_fitness, "epochs_without_improvement": self.epochs_without_improvement,
                "train_time": self.train_time}

    def _save(self, epoch: int, improved: bool, final_epoch: bool) -> None:
        meta = self._meta(epoch)
        weights = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                   for k, v in self.eval_model.state_dict().items()}
        train_state = {
            "train_model": {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "rng": rng_states(),
            "data_rng": _loader_rng_state(self.train_loader),
        }
        save_checkpoint(self.wdir / "last.pt", weights, meta, **train_state)
        if improved:
            save_checkpoint(self.wdir / "best.pt", weights, meta)
        period = self.args.save_period
        if period > 0 and (epoch + 1) % period == 0:
            save_checkpoint(self.wdir / f"epoch{epoch + 1}.pt", weights, meta)

    def _restore(self, ckpt: dict) -> None:
        meta = ckpt["meta"]
        self.start_epoch = int(meta["epoch"])
        if self.start_epoch >= self.args.epochs:
            raise TrainingError(f"{self.args.resume} finished all {self.args.epochs} epochs; nothing to resume "
                                f"(start a new run with pretrained={self.args.resume})")
        unwrap(self.model).load_state_dict(ckpt["train_model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["model"], int(ckpt["ema_updates"]))
        self.best_fitness = float(meta["best_fitness"])
        self.epochs_without_improvement = int(meta["epochs_without_improvement"])
        self.train_time, self.metrics = float(meta["train_time"]), dict(meta["metrics"])
        set_rng_states(ckpt["rng"])
        _set_loader_rng_state(self.train_loader, ckpt["data_rng"])
        self.log(f"resuming {self.args.resume} from epoch {self.start_epoch + 1}/{self.args.epochs}")

    def _finish(self, epoch_times: list[float], train_times: list[float]) -> dict[str, Any]:
        """Strip the training state from the checkpoints, plot the curves and validate best.pt once more."""
        if not self.main:
            return {}
        for name in ("last.pt", "best.pt"):
            path = self.wdir / name
            if path.is_file():
                ckpt = load_checkpoint(path)
                save_checkpoint(path, ckpt["model"], ckpt["meta"])
        plot_training_curves(self.save_dir / "results.csv", result_columns(self.loss_fn.part_names)[1:-1],
                             self.save_dir / "results.png")
        best = self.wdir / "best.pt"
        metrics = dict(self.metrics)
        if self.val_loader is not None and best.is_file():
            a = self.args
            metrics = validate(model_from_checkpoint(best), self.data, imgsz=a.imgsz, batch=self.batch * 2, iou=a.iou,
                               device=self.device, dataloader=self.val_loader, save_dir=self.save_dir,
                               plots=a.plots, verbose=a.verbose, workers=a.workers, save_json=True)
            _gzip_in_place(self.save_dir / "predictions.json")  # best.pt's detections: the ablation's bootstrap
        images = len(self.train_loader.dataset)
        result = {**to_jsonable(metrics), "save_dir": str(self.save_dir), "best": str(best), "epochs_run": self.epoch + 1,
                  "train_time_s": round(self.train_time, 2),
                  "epoch_time_s": float(np.mean(epoch_times)) if epoch_times else None,
                  "train_images_per_s": images / float(np.median(train_times)) if train_times else None}
        self.log(f"results saved to {self.save_dir}")
        return result


# --- helpers
PREDICTIONS_FILE = "predictions.json.gz"  # best.pt's COCO predictions on the val split, kept in every run folder


def _gzip_in_place(path: Path) -> Path:
    """Replace ``path`` by ``path.gz`` (written atomically; no timestamp inside, so reruns give equal bytes)."""
    target = path.with_name(path.name + ".gz")
    write_atomic(target, lambda f: f.write(gzip.compress(path.read_bytes(), mtime=0)))
    path.unlink()
    return target
def _resume_settings(settings: Settings) -> tuple[dict, Settings]:
    """Load the checkpoint named by ``resume`` (true = newest last.pt under ``project``) and its settings."""
    resume = settings["resume"]
    if resume is True or str(resume).lower() == "true":
        candidates = sorted(Path(settings["project"] or "runs").glob("*/weights/last.pt"),
                            key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise TrainingError(f"resume=true but no {settings['project'] or 'runs'}/*/weights/last.pt exists")
        resume = candidates[-1]
    ckpt = load_checkpoint(resume)
    if "optimizer" not in ckpt:
        raise TrainingError(f"{resume} has no training state: its run finished (or it is a best.pt); start a new "
                            f"run with pretrained={resume}")
    keys = command_keys("train")
    args = {k: v for k, v in ckpt["meta"]["args"].items() if k in keys}  # keys of older versions are dropped
    saved = cfg_settings("train", args)
    changed = sorted(k for k in settings.given - {*RESUME_OVERRIDES, "resume", "project"} if settings[k] != saved[k])
    if changed:
        raise ConfigError(f"resume={settings['resume']} continues {resume} with the settings it started with; "
                          f"{', '.join(f'{k}={settings[k]}' for k in changed)} cannot change in a resumed run (it "
                          f"takes only {', '.join(RESUME_OVERRIDES)}): drop them, or start a new run with "
                          f"pretrained={resume}")
    args.update({k: settings[k] for k in RESUME_OVERRIDES if k in settings.given})
    args["resume"] = str(resume)
    return ckpt, cfg_settings("train", args)


def resolve_lr0(optimizer: str, lr0: float | None) -> float:
    """``lr0`` as given, or the optimizer's own default when it is not set; unknown optimizers are an error."""
    if optimizer.lower() not in DEFAULT_LR:
        raise ValueError(f"optimizer must be SGD, AdamW or auto, got '{optimizer}'")
    return DEFAULT_LR[optimizer.lower()] if lr0 is None else float(lr0)


def lr_lambda(cosine: bool, lrf: float, epochs: int) -> Callable[[int], float]:
    """LR factor per epoch: from 1 down to ``lrf``, linearly or along a half cosine."""
    if cosine:
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda e: max(1 - e / epochs, 0) * (1.0 - lrf) + lrf


def _loader_rng_state(loader) -> dict:
    """Order and augmentation generators of a single-process loader (workers reseed themselves)."""
    return {"generator": loader.generator.get_state(),
            "dataset": json.dumps(loader.dataset.rng.bit_generator.state)}


def _set_loader_rng_state(loader, state: dict) -> None:
    loader.generator.set_state(state["generator"])
    loader.dataset.rng.bit_generator.state = json.loads(state["dataset"])


def _memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.memory_reserved(device) / 2**30:.1f}G"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f}G"


def _epoch_line(row: dict, loss_parts: tuple[str, ...], validated: bool) -> str:
    text = f"epoch {row['epoch']}: loss " + " ".join(f"{p} {row[f'train/{p}_loss']:.3f}" for p in loss_parts)
    if validated:
        text += (f" | P {row['metrics/precision']:.3f} R {row['metrics/recall']:.3f} "
                 f"mAP50 {row['metrics/mAP50']:.3f} mAP50-95 {row['metrics/mAP50-95']:.3f}")
    return text + f" | {row['time']:.0f}s"


def result_columns(loss_parts: tuple[str, ...]) -> tuple[str, ...]:
    """results.csv's columns: epoch, one training loss per part of the model's loss (box/cls/dfl, or box/cls/obj for
    anchor-based heads), learning rates, validation metrics, cumulative training time."""
    return ("epoch", *(f"train/{part}_loss" for part in loss_parts), *METRIC_AND_LR_COLUMNS, "time")


def _append_csv(path: Path, row: dict, columns: tuple[str, ...]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})


def _truncate_csv(path: Path, epochs_done: int, columns: tuple[str, ...]) -> None:
    """Keep the rows of the first ``epochs_done`` epochs (0: none, a fresh run; after a resume, rows written after
    the checkpoint are redone)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _write_yaml(path: Path, data: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(to_jsonable(data), sort_keys=False))
