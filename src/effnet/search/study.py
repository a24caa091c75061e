"""The paper's scaling study at proxy scale: Fig. 3, Fig. 7, Fig. 8 / Table 7 and Table 3.

One experiment design covers all four: take a base network, scale it by depth
only, width only, resolution only, and by compound scaling (d = alpha^phi,
w = beta^phi, r = gamma^phi, paper Eq. 3), each to the same MAC budgets
(multiples of the base's MACs), train every model on the same short budget
for several seeds, and compare validation top-1 against *measured* MACs.

* Fig. 3: the single-dimension curves of the B0 base;
* Fig. 8 / Table 7: those curves beside compound scaling;
* Table 3: the same comparison on the MobileNetV2- and ResNet-50-style bases;
* Fig. 7: class activation maps of the B0 models at the largest budget on the
  same validation images.

MAC budgets are met by searching each multiplier until the *measured* MACs of
the built model are closest to the target; rounding (channels to multiples of
8, repeats by ceil, feature-map sizes at small inputs) makes them land near,
not on, the target, and the report shows by how much.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import EffnetError
from .budget import Budget, ProxyData, load_trainer
from .candidates import Cost, Scaled, measure, scaled_resolution

STRATEGIES = ("depth", "width", "resolution", "compound")


@dataclass(frozen=True)
class BaseNet:
    """A study base: ``BASELINES[name]`` scaled down to (`width`, `depth`) for a cheap proxy."""

    name: str
    width: float = 1.0
    depth: float = 1.0


@dataclass(frozen=True)
class Preset:
    """Everything one study run does. The first base is the B0 base of Fig. 3, 7 and 8."""

    name: str
    description: str
    dataset: str
    image_size: int
    bases: tuple[BaseNet, ...]
    budget: Budget
    seeds: int
    targets: tuple[float, ...]           # MAC multiples of the B0 base (Fig. 3 / Fig. 8)
    table3_target: float                 # MAC multiple for the other bases (Table 3)
    coefficients: tuple[float, float, float] = (1.2, 1.1, 1.15)  # alpha, beta, gamma
    cam_images: int = 6
    cam_stride: int = 8
    workers: int | None = None           # parallel training processes; None: one per core
    expected: str = ""
    drop_rate: float = 0.1
    drop_path_rate: float = 0.05

    def identity(self) -> dict:
        """The settings that decide the results (the prose fields are left out)."""
        d = json.loads(json.dumps(asdict(self)))
        d.pop("description")
        d.pop("expected")
        return d


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        description="Fashion-MNIST at 32 px, B0 at width 0.25 and depth 0.5 (MobileNetV2 "
                    "0.35/0.5, ResNet-50 0.125/0.5), 3 epochs over 4,000 training images, "
                    "2 seeds, budgets of 2.5x and 4x the base's MACs: a proxy that fits "
                    "in 15 minutes on 2 CPU cores",
        dataset="fashion-mnist", image_size=32,
        bases=(BaseNet("b0", 0.25, 0.5), BaseNet("mobilenetv2", 0.35, 0.5),
               BaseNet("resnet50", 0.125, 0.5)),
        budget=Budget(epochs=3, train_size=4000, val_size=2000, batch_size=128,
                      recipe="short", lr=0.01),
        seeds=2, targets=(2.5, 4.0), table3_target=4.0,
        expected="about 10 minutes on 2 free CPU cores (measured: 10.0 min at light load, "
                 "24 min with the 2 cores shared by 3 other jobs)"),
    "full": Preset(
        name="full",
        description="Fashion-MNIST at 32 px, B0 at width 0.5 and depth 1 (MobileNetV2 0.5/1, "
                    "ResNet-50 0.25/0.5), 10 epochs over the whole 54,000-image training "
                    "split, 3 seeds, budgets of 2.5x, 4x and 8x the base's MACs",
        dataset="fashion-mnist", image_size=32,
        bases=(BaseNet("b0", 0.5, 1.0), BaseNet("mobilenetv2", 0.5, 1.0),
               BaseNet("resnet50", 0.25, 0.5)),
        budget=Budget(epochs=10, train_size=None, val_size=None, batch_size=128,
                      recipe="short", lr=0.01),
        seeds=3, targets=(2.5, 4.0, 8.0), table3_target=4.0,
        expected="roughly 2 days on 2 CPU cores (extrapolated from the quick preset's "
                 "measured time: ~45x the images per model, ~3x the cost per image, 1.5x the "
                 "seeds, and 8x budgets; not run here), a few hours on one GPU"),
    "cifar10": Preset(
        name="cifar10",
        description="CIFAR-10 at 32 px (downloaded by torchvision), the full B0 (width 1, "
                    "depth 1), MobileNetV2 and ResNet-50 (width 0.5), 30 epochs over the "
                    "45,000-image training split, 3 seeds, budgets of 2.5x, 4x and 8x",
        dataset="cifar10", image_size=32,
        bases=(BaseNet("b0", 1.0, 1.0), BaseNet("mobilenetv2", 1.0, 1.0),
               BaseNet("resnet50", 0.5, 1.0)),
        budget=Budget(epochs=30, train_size=None, val_size=None, batch_size=256,
                      recipe="short", augment="light"),
        seeds=3, targets=(2.5, 4.0, 8.0), table3_target=4.0, workers=1,
        expected="for a GPU and internet access (CIFAR-10 download); not timed here"),
}

# Paper Table 7 (ImageNet top-1, %, and B MACs): what the proxy study mirrors.
PAPER_TABLE7 = {"baseline": (77.3, 0.4), "depth": (79.0, 1.8), "width": (78.9, 1.8),
                "resolution": (79.1, 1.9), "compound": (81.1, 1.8)}
# Paper Table 3 (ImageNet top-1, %, and B MACs) for the MobileNetV2 and ResNet-50 rows.
PAPER_TABLE3 = {
    "mobilenetv2": {"baseline": (72.0, 0.3), "depth": (76.8, 1.2), "width": (76.4, 1.1),
                    "resolution": (74.8, 1.2), "compound": (77.4, 1.3)},
    "resnet50": {"baseline": (76.0, 4.1), "depth": (78.1, 16.2), "width": (77.7, 14.7),
                 "resolution": (77.5, 16.4), "compound": (78.8, 16.7)},
}


@dataclass(frozen=True)
class Run:
    """One model of the study: a base scaled by one strategy to one MAC budget."""

    group: str
    strategy: str                 # baseline | depth | width | resolution | compound
    target: float                 # nominal MAC multiple of the base (1 for the baseline)
    multiplier: float             # the scaled dimension's multiplier (phi for compound)
    scaled: Scaled
    cost: Cost
    base_macs: int

    @property
    def key(self) -> str:
        return f"{self.group}-{self.strategy}-{self.target:g}x"

    @property
    def mac_ratio(self) -> float:
        return self.cost.macs / self.base_macs

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(key=self.key, mac_ratio=self.mac_ratio,
                 mac_distance=self.mac_ratio / self.target - 1)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Run:
        return cls(d["group"], d["strategy"], d["target"], d["multiplier"],
                   Scaled(**d["scaled"]), Cost(**d["cost"]), d["base_macs"])


# ---------------------------------------------------------------- planning (measured MACs)
class _CostCache:
    def __init__(self, num_classes: int, in_chans: int) -> None:
        self.num_classes, self.in_chans = num_classes, in_chans
        self._memo: dict[tuple, Cost] = {}

    def __call__(self, s: Scaled) -> Cost:
        spec = s.spec()
        key = (s.base, tuple((st.out_channels, st.repeats) for st in spec.stages),
               spec.stem_channels, spec.head_channels, s.resolution)
        if key not in self._memo:
            self._memo[key] = measure(s, self.num_classes, self.in_chans)
        return self._memo[key]


def scaled_by(base: BaseNet, image_size: int, strategy: str, m: float,
              coefficients: tuple[float, float, float]) -> Scaled:
    """The base scaled by multiplier `m` along `strategy` (phi = m for compound, Eq. 3)."""
    w, d, r = base.width, base.depth, image_size
    if strategy == "depth":
        d = base.depth * m
    elif strategy == "width":
        w = base.width * m
    elif strategy == "resolution":
        r = scaled_resolution(image_size, m)
    elif strategy == "compound":
        alpha, beta, gamma = coefficients
        d, w, r = base.depth * alpha**m, base.width * beta**m, scaled_resolution(image_size,
                                                                                 gamma**m)
    elif strategy != "baseline":
        raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return Scaled(base.name, w, d, r)


def match_macs(base: BaseNet, image_size: int, strategy: str, target_macs: float,
               cost: Callable[[Scaled], Cost], coefficients: tuple[float, float, float],
               limit: float = 64.0, steps: int = 8) -> tuple[float, Scaled]:
    """The multiplier whose *measured* MACs come closest to `target_macs`.

    MACs grow monotonically (in steps) with each multiplier: bracket the
    target by doubling the multiplier (adding 1 to phi for compound), bisect
    for the smallest one reaching it, and return it or the last one below,
    whichever lands closer in log scale.
    """
    def at(m: float) -> Scaled:
        return scaled_by(base, image_size, strategy, m, coefficients)

    compound = strategy == "compound"
    lo, hi = (0.0, 1.0) if compound else (1.0, 2.0)
    while cost(at(hi)).macs < target_macs:
        lo, hi = hi, (hi + 1 if compound else hi * 2)
        if hi > limit:
            raise EffnetError(f"{strategy} scaling of {base.name} cannot reach "
                              f"{target_macs:.3g} MACs: lower the preset's targets")
    if strategy == "resolution":  # integer pixel sizes: bisect on those
        lo_px, hi_px = scaled_resolution(image_size, lo), scaled_resolution(image_size, hi)
        while hi_px - lo_px > 1:
            mid = (lo_px + hi_px) // 2
            if cost(Scaled(base.name, base.width, base.depth, mid)).macs >= target_macs:
                hi_px = mid
            else:
                lo_px = mid
        cands = [(px / image_size, Scaled(base.name, base.width, base.depth, px))
                 for px in (lo_px, hi_px)]
    else:
        for _ in range(steps):
            mid = (lo + hi) / 2
            if cost(at(mid)).macs >= target_macs:
                hi = mid
            else:
                lo = mid
        cands = [(m, at(m)) for m in (lo, hi)]
    return min(cands, key=lambda c: abs(math.log(max(1, cost(c[1]).macs) / target_macs)))


def plan(preset: Preset, num_classes: int = 10, in_chans: int = 1,
         progress: Callable[[str], None] | None = None) -> list[Run]:
    """Every model of the study, each with its MACs measured and matched to its budget."""
    cost = _CostCache(num_classes, in_chans)
    runs: list[Run] = []
    for i, base in enumerate(preset.bases):
        base_scaled = scaled_by(base, preset.image_size, "baseline", 1.0, preset.coefficients)
        base_cost = cost(base_scaled)
        runs.append(Run(base.name, "baseline", 1.0, 1.0, base_scaled, base_cost, base_cost.macs))
        targets = preset.targets if i == 0 else (preset.table3_target,)
        for target in targets:
            for strategy in STRATEGIES:
                if progress:
                    progress(f"{base.name} {strategy} {target:g}x")
                m, s = match_macs(base, preset.image_size, strategy, target * base_cost.macs,
                                  cost, preset.coefficients)
                runs.append(Run(base.name, strategy, target, m, s, cost(s), base_cost.macs))
    return runs


# ---------------------------------------------------------------- training (in worker processes)
_WORKER: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def train_job(run: dict, seed: int, preset: dict, trainer_ref: str | None, root: str | None,
              download: bool, keep_weights: bool) -> dict:
    """Train one study model for one seed (runs in a worker process); return its result."""
    import torch

    budget = Budget(**preset["budget"])
    data_key = json.dumps([preset["dataset"], preset["budget"], root])
    if _WORKER.get("data_key") != data_key:
        from .search import DATASET_SHAPES

        in_chans = DATASET_SHAPES.get(preset["dataset"], (None, 3))[1]
        _WORKER["data"] = ProxyData(preset["dataset"], root, in_chans, budget,
                                    download=download, cache=1)
        _WORKER["data_key"] = data_key
    data: ProxyData = _WORKER["data"]
    scaled = Scaled(**run["scaled"])
    data.splits(scaled.resolution)
    torch.manual_seed(seed)
    model = scaled.build(num_classes=data.num_classes or 10, in_chans=data.in_chans,
                         drop_rate=preset["drop_rate"], drop_path_rate=preset["drop_path_rate"])
    out = load_trainer(trainer_ref)(model, scaled.resolution, data, budget, seed, None)
    result = {"val_top1": float(out["val_top1"]), "seconds": float(out["seconds"]),
              "curve": [float(v) for v in out.get("curve", [])]}
    if keep_weights:
        result["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return result


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished worker processes."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _workers(preset: Preset, requested: int | None) -> int:
    if requested:
        return max(1, requested)
    if preset.workers:
        return preset.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cam_runs(runs: list[Run], preset: Preset) -> list[Run]:
    """The models shown in Fig. 7: the B0 base and its four scalings at the largest budget."""
    b0 = preset.bases[0].name
    top = max(preset.targets)
    return [r for r in runs if r.group == b0 and (r.strategy == "baseline" or r.target == top)]


# ---------------------------------------------------------------- the study
def run_study(preset: str | Preset, output: str | Path, seeds: int | None = None,
              progress: bool = True, root: str | None = None, download: bool = False,
              trainer: str | None = None, workers: int | None = None) -> Path:
    """Run (or resume) the study into `output`; return the path of report.md.

    Results are saved after every trained model (``state.json``), so a rerun
    with the same preset only trains what is missing. `trainer` names a
    custom trainer as 'package.module:function' (tests use a fast fake one).
    """
    from tqdm.auto import tqdm

    from . import report as report_mod

    t_start, cpu_start, load_start = time.perf_counter(), _cpu_seconds(), _load()
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise EffnetError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if seeds is not None:
        if seeds < 2:
            raise EffnetError("--seeds must be >= 2: every number is a mean with its spread")
        preset = replace(preset, seeds=seeds)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    from .search import DATASET_SHAPES, atomic_write_text

    num_classes, in_chans = DATASET_SHAPES.get(preset.dataset, (10, 3))
    state_path = out / "state.json"
    state: dict[str, Any] = {"preset": preset.identity(), "results": {}, "wall_s": 0.0}
    if state_path.exists():
        try:
            old = json.loads(state_path.read_text())
        except (OSError, ValueError):
            old = None
        if old and old.get("preset") == state["preset"]:
            state = old
        elif old:
            raise EffnetError(f"{out} holds a study with other settings: pass a new --output, "
                              f"or delete {state_path} to start over")
    print(f"study '{preset.name}': {preset.description}")
    print(f"expected time: {preset.expected}; output: {out}")
    if state.get("plan"):
        runs = [Run.from_dict(d) for d in state["plan"]]
    else:
        bar = tqdm(desc="matching MAC budgets", unit="model", disable=not progress,
                   dynamic_ncols=True)
        runs = plan(preset, num_classes or 10, in_chans,
                    progress=lambda s: (bar.set_postfix_str(s, refresh=False), bar.update(1)))
        bar.close()
        state["plan"] = [r.as_dict() for r in runs]
        atomic_write_text(state_path, json.dumps(state, indent=1))
    show = {r.key for r in cam_runs(runs, preset)}
    models_dir = out / "models"
    jobs = [(r, s) for r in runs for s in range(preset.seeds)
            if f"{r.key}/{s}" not in state["results"]
            or (s == 0 and r.key in show and not (models_dir / f"{r.key}.pt").exists())]
    # Longest first (by MACs), so parallel workers finish together.
    jobs.sort(key=lambda j: -j[0].cost.macs * max(1.0, j[0].scaled.depth_mult))
    n_workers = min(_workers(preset, workers), max(1, len(jobs)))
    threads = max(1, _workers(preset, None) // n_workers)
    ident = preset.identity()
    bar = tqdm(total=len(runs) * preset.seeds, desc="training", unit="run",
               initial=len(runs) * preset.seeds - len(jobs), disable=not progress,
               dynamic_ncols=True)

    def record(run: Run, seed: int, res: dict) -> None:
        sd = res.pop("state_dict", None)
        if sd is not None:
            import torch

            models_dir.mkdir(exist_ok=True)
            tmp = models_dir / f".{run.key}.pt.tmp"
            torch.save(sd, tmp)
            os.replace(tmp, models_dir / f"{run.key}.pt")
        state["results"][f"{run.key}/{seed}"] = res
        atomic_write_text(state_path, json.dumps(state, indent=1))
        bar.set_postfix_str(f"{run.key} seed {seed}: {100 * res['val_top1']:.1f}%",
                            refresh=False)
        bar.update(1)

    def args(r: Run, s: int) -> tuple:
        return (r.as_dict(), s, ident, trainer, root, download, s == 0 and r.key in show)

    if n_workers == 1:
        _init_worker(threads)
        for run, seed in jobs:
            record(run, seed, train_job(*args(run, seed)))
    elif jobs:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(train_job, *args(r, s)): (r, s) for r, s in jobs}
            try:
                for fut in as_completed(futures):
                    run, seed = futures[fut]
                    record(run, seed, fut.result())
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
    state["wall_s"] = state.get("wall_s", 0.0) + (time.perf_counter() - t_start)
    if jobs:  # the machine facts of the sessions that trained
        state["cpu_s"] = state.get("cpu_s", 0.0) + (_cpu_seconds() - cpu_start)
        state.update(load_avg=[load_start, _load()], workers=n_workers, threads=threads)
    atomic_write_text(state_path, json.dumps(state, indent=1))
    print("drawing class activation maps and writing the report")
    cams = report_mod.class_activation_maps(cam_runs(runs, preset), preset, models_dir, root,
                                            num_classes or 10, in_chans)
    return report_mod.write_report(out, preset, runs, state, cams,
                                   workers=state.get("workers", n_workers),
                                   threads=state.get("threads", threads))


def results_by_run(runs: list[Run], state: dict, seeds: int) -> list[dict]:
    """One row per run: its plan and the mean and spread of validation top-1 over seeds."""
    import statistics

    rows = []
    for r in runs:
        res = [state["results"].get(f"{r.key}/{s}") for s in range(seeds)]
        res = [x for x in res if x is not None]
        tops = [x["val_top1"] for x in res]
        row = r.as_dict()
        row.update(seeds=len(tops), val_top1_seeds=tops,
                   val_top1=statistics.fmean(tops) if tops else None,
                   val_top1_std=statistics.stdev(tops) if len(tops) > 1 else None,
                   seconds=sum(x["seconds"] for x in res))
        rows.append(row)
    return rows


__all__ = ["PRESETS", "PAPER_TABLE3", "PAPER_TABLE7", "BaseNet", "Preset", "Run", "STRATEGIES",
           "cam_runs", "match_macs", "plan", "results_by_run", "run_study", "scaled_by"]
