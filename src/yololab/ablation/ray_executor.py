"""``compare executor=ray``: every (model, seed) run is a Ray task on a cluster, or on a Ray started on this machine.

Ray is optional (``pip install yololab[ray]``) and imported only here, only when a comparison asks for it. A task
runs the same ``train_subprocess`` as the local executor. When the worker sees the driver's comparison folder (one
machine, or ``project=`` on a shared file system) the run writes there in place; otherwise it trains in the
worker's temporary folder and sends its small files back as bytes, which the driver writes atomically.

A task whose worker or node dies is rerun by Ray (``max_retries``) and resumes from its ``last.pt`` when the new
worker can read it (in place, or on the same node), else restarts; a run that fails for its own reason (a bad
setting, a non-finite loss) raises an application error, which Ray does not retry, and is reported as failed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..utils.files import write_atomic
from ..utils.profile import machine_summary
from .runner import MACHINE_KEY, train_subprocess

# The files of a run folder that a worker without the driver's folder sends back (weights only when asked).
RUN_FILES = ("results.csv", "args.yaml", "recipe.json", "health.json", "predictions.json.gz", "compare.log",
             "stdout.log")
WEIGHTS_FILE = "weights/best.pt"
SHARED_MARKER = ".ray-driver"  # written by the driver into the comparison folder: a worker that reads it shares it
LOCAL_OBJECT_STORE_BYTES = 100 * 1024**2  # a Ray started here moves only small results


def import_ray():
    """The ``ray`` module, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("executor=ray needs Ray: pip install yololab[ray]") from None
    return ray


def start_local_ray(num_cpus: int | None = None, temp_dir: str | None = None) -> None:
    """Start a single-machine Ray for this process: bound to 127.0.0.1, no dashboard, no usage report, a small
    object store. Ray reads the first two switches when it is imported, so they are set before."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage over the network
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # not a cluster: every address is 127.0.0.1
    ray = import_ray()
    ray.init(address=None, num_cpus=num_cpus, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             _temp_dir=temp_dir, log_to_driver=False, configure_logging=False)


class RayExecutor:
    """A ``RunFn`` that trains each run as a Ray task; use it as a context manager around the comparison.

    ``address``: the cluster (``ray://host:10001``, ``auto``); empty starts Ray on this machine (and stops it at
    the end); a Ray this process already joined is used as it is. ``shared_fs`` None detects whether workers see
    the comparison folder; True/False force writing in place or sending the files back.
    """

    def __init__(self, out: Path, *, address: str | None = None, cpus_per_run: int = 1, gpus_per_run: float = 0,
                 max_retries: int = 2, fetch_weights: bool = False, shared_fs: bool | None = None):
        self.out = Path(out).resolve()
        self.address = address or None
        self.cpus, self.gpus = int(cpus_per_run), float(gpus_per_run)
        self.max_retries, self.fetch_weights, self.shared_fs = max_retries, fetch_weights, shared_fs
        self._ray: Any = None
        self._started = False
        self._task: Any = None
        self._marker = ""

    def __enter__(self) -> "RayExecutor":
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                except (ConnectionError, RuntimeError) as e:
                    raise UserError(f"cannot join the Ray cluster at ray_address={self.address}: {e}") from None
            else:
                start_local_ray()
            self._started = True
        try:
            self._check_resources(ray.cluster_resources())
        except UserError:
            self.__exit__()
            raise
        self._marker = uuid.uuid4().hex
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / SHARED_MARKER, lambda f: f.write(self._marker.encode()))
        self._task = ray.remote(train_task).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                    max_retries=self.max_retries, retry_exceptions=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        (self.out / SHARED_MARKER).unlink(missing_ok=True)
        if self._started:
            self._ray.shutdown()

    def _check_resources(self, resources: dict[str, float]) -> None:
        for name, need in (("CPU", self.cpus), ("GPU", self.gpus)):
            if need and resources.get(name, 0) < need:
                key = "cpus_per_run" if name == "CPU" else "gpus_per_run"
                raise UserError(f"{key}={need:g} but the Ray cluster has {resources.get(name, 0):g} {name}s "
                                "(lower it, or add nodes)")

    @property
    def parallel(self) -> int:
        """How many runs the cluster holds at once (its CPUs and GPUs over each run's share, now)."""
        resources = self._ray.cluster_resources()
        fits = [int(resources.get("CPU", 0) // self.cpus)]
        if self.gpus:
            fits.append(int(resources.get("GPU", 0) // self.gpus))
        return max(1, min(fits))

    def __call__(self, model: str, seed: int, run_dir: Path, recipe: dict, device: str | None = None) -> dict:
        ray = self._ray
        run_dir = Path(run_dir).resolve()
        shared = (str(self.out / SHARED_MARKER), self._marker) if self.shared_fs is None else self.shared_fs
        recipe = {**recipe, "data": _absolute(recipe["data"])} if isinstance(recipe.get("data"), str) else recipe
        ref = self._task.remote(_absolute(model), seed, str(run_dir), recipe, threads=self.cpus, gpu=self.gpus > 0,
                                shared=shared, fetch_weights=self.fetch_weights)
        try:
            metrics, files = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the run's own failure: reported like the local executor's
            raise RuntimeError(str(e.cause) if e.cause is not None else str(e).splitlines()[-1]) from None
        except ray.exceptions.RayError as e:  # its worker or node died more often than max_retries allows
            raise RuntimeError(f"Ray lost it ({type(e).__name__}) after {self.max_retries} retries") from None
        for name, data in files.items():
            write_atomic(run_dir / name, lambda f, data=data: f.write(data))
        return metrics


def train_task(model: str, seed: int, run_dir: str, recipe: dict, *, threads: int, gpu: bool,
               shared: tuple[str, str] | bool, fetch_weights: bool) -> tuple[dict, dict[str, bytes]]:
    """One run on a Ray worker: ``train_subprocess`` with ``threads`` intra-op threads, in the driver's run folder
    when this worker shares it, else in a worker folder whose small files come back. Returns (metrics with the
    worker's machine record, {relative path: bytes})."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # what Ray granted, whatever the worker inherited
    in_place = shared if isinstance(shared, bool) else _reads_marker(*shared)
    folder = Path(run_dir) if in_place else worker_folder(run_dir)
    metrics = train_subprocess(model, seed, folder, recipe, "0" if gpu else "cpu")  # Ray set CUDA_VISIBLE_DEVICES
    metrics[MACHINE_KEY] = machine_summary(load=False)
    if in_place:
        return metrics, {}
    names = (*RUN_FILES, WEIGHTS_FILE) if fetch_weights else RUN_FILES
    files = {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}
    metrics["save_dir"] = run_dir  # where the files land; best.pt only when it is sent too
    metrics["best"] = str(Path(run_dir) / WEIGHTS_FILE) if WEIGHTS_FILE in files else None
    shutil.rmtree(folder.parent, ignore_errors=True)  # the run's own worker folder
    return metrics, files


def worker_folder(run_dir: str) -> Path:
    """Where a worker without the driver's folder trains ``run_dir``: the same place for every retry on this node,
    so a rerun after a lost worker resumes from its ``last.pt``."""
    key = hashlib.sha1(run_dir.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "yololab-ray" / key / Path(run_dir).name


def _absolute(path: str) -> str:
    """A file here as its absolute path (a worker starts in another folder); names (yolov8n.yaml, synthetic) as
    they are."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _reads_marker(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False
