"""Per-image cost of every detection method: FLOPs, images/s, peak memory; prints JSON.

Every registered method (``ldmdetect.methods``) has a cost spec in its method package
(``cost.py``, returned by ``Method.cost_specs``): the stages its feature step and classifier
run per image (VAE encode, UNet passes, decodes, captioning, the classifier), each on a
full-size architecture written out there from the published configs
(SD v1.5 / 2.x VAE and UNet, Kandinsky 2.1's MoVQ, ADM-256, BLIP-2 OPT-2.7b, CLIP RN50,
ResNet-50, ConvNeXt-L, DINOv2 ViT-L/14, LPIPS VGG16) with random weights: cost depends on
the architecture only, so nothing is downloaded. A method registered without a spec stops the
benchmark with its name, so every new method must add one. The generator-backed methods also
have a ``METHOD:FAMILY`` spec for SDXL, SD3.5-medium and FLUX.1-dev (their packages build them
from ``ldmdetect.methods.family_costs``: the families' denoisers, text encoders and
autoencoders, driven as ``SDComponents.predict`` drives them), at 512 and 1024 px; a CPU
counts their FLOPs but does not time them.

    python benchmarks/feature_cost.py --quick --threads 2 --markdown   # CPU, under 15 min
    python benchmarks/feature_cost.py --device cuda --output cuda.json  # bf16, both sizes
    python benchmarks/feature_cost.py --flops-only --method fakeinversion
    python benchmarks/feature_cost.py --flops-only --method lare2:flux.1-dev  # a family row
    python benchmarks/feature_cost.py --table cpu.json cuda.json        # README table

Figures, per method and per working size (256 and 512 px; what "size" means for each method
is in its ``size_means``):
- FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of each stage
  on the meta device (shapes only: free, and the same on every machine), times how often the
  stage runs per image; a multiply-add is 2 FLOPs. Stages that run once per prompt (a cached
  text encoding) are listed but not added to the image's total.
- images/s at batch 1 and at a throughput batch: each stage is timed on its own (one call,
  times the number of calls per image: a sampling loop's UNet passes all cost the same), after
  a warm-up; CUDA is timed with CUDA events. ``--quick`` on a CPU times 256 px only, warms up
  each stage at 64 px, skips throughput batches that would take too long, and estimates
  BLIP-2's 2.65 B-parameter language model from its FLOPs (the JSON says where).
- peak memory: CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before the
  method's models were built (weights + activations); CPU, the peak resident set size
  (``VmHWM``, reset through ``/proc/self/clear_refs``) above the RSS before the models were
  built, ``ru_maxrss`` where that cannot be reset.
- on CUDA, model-FLOP utilisation per stage: achieved FLOP/s over the GPU's dense bf16 peak
  (H100, H200 and A100 by name; another GPU's from ``$LDMDETECT_PEAK_BF16_FLOPS``).

On CUDA the generator components run in bf16 (as ``ldmdetect`` loads them), classifiers in
fp32 under bf16 autocast (as ``Detector`` scores), convolutional models channels-last,
attention through PyTorch's SDPA (diffusers' ``AttnProcessor2_0``, checked), and an image's
noise ensemble in the same batch as the other images; ``--compile`` compiles every model.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ldmdetect import methods
from ldmdetect.methods.cost import (
    BLIP2_QUERY_TOKENS,
    CAPTION_TOKENS,
    OPT_2_7B,
    Blip2Prefix,
    CostSpec,
    Model,
    Pipeline,
    Stage,
    greedy_caption,
    lm_full_sequence,
    opt_builder,
)
from ldmdetect.methods.family_costs import FAMILY_SIZES

# Dense bf16 tensor-core peak FLOP/s by device name (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100": 989.4e12,  # H100 SXM; the PCIe card is lower (756e12), matched first below
    "H200": 989.4e12,
    "A100": 312e12,
}
PEAK_BF16_FLOPS_EXACT: dict[str, float] = {"H100 PCIe": 756e12, "H100 NVL": 835e12}

SIZES = (256, 512)
# The cost specs compared per size (--compare SLOW FAST), by default the paper's pair, and
# what each paper claims of the pairs it compares.
COMPARE = ("dire", "lare2")
PAPER_CLAIMS = {COMPARE: "LaRE^2 extracts features 8x faster than DIRE"}


# For a GPU the table does not know: its dense bf16 peak in FLOP/s, e.g. 362e12 (L40S).
PEAK_ENV = "LDMDETECT_PEAK_BF16_FLOPS"


def peak_bf16_flops(device_name: str, environ: Mapping[str, str] = os.environ) -> float | None:
    """The GPU's dense bf16 peak from its name, else from ``$LDMDETECT_PEAK_BF16_FLOPS``;
    None when neither knows it (no MFU then)."""
    for key, value in PEAK_BF16_FLOPS_EXACT.items():
        if key in device_name:
            return value
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return value
    stated = environ.get(PEAK_ENV, "").strip()
    if not stated:
        return None
    try:
        peak = float(stated)
    except ValueError:
        peak = math.nan
    if not math.isfinite(peak) or peak <= 0:
        raise SystemExit(f"{PEAK_ENV}={stated!r}: expected a positive FLOP/s figure, e.g. 362e12")
    return peak


# --------------------------------------------------------------------------------------------
# Specs: each method package's ``cost.py``, found through the method registry

COST_SPECS: dict[str, CostSpec] = {}


def register(spec: CostSpec) -> CostSpec:
    if spec.name in COST_SPECS:
        raise ValueError(f"cost spec {spec.name!r} is registered twice")
    COST_SPECS[spec.name] = spec
    return spec


def collect_specs() -> dict[str, CostSpec]:
    """``COST_SPECS`` with every registered method's specs (``Method.cost_specs``) added,
    methods registered since the last call included; specs added by hand stay."""
    for name in methods.list_methods():
        for spec in methods.get(name).cost_specs():
            if spec.method == name:  # a subclass inherits its parent's specs, not its name
                COST_SPECS.setdefault(spec.name, spec)
    return COST_SPECS


def missing_specs() -> list[str]:
    """Registered methods without a cost spec."""
    covered = {spec.method for spec in collect_specs().values()}
    return [name for name in methods.list_methods() if name not in covered]


def check_specs() -> None:
    """Fail loudly when a registered method has no cost spec: a new method must add one."""
    missing = missing_specs()
    if missing:
        raise SystemExit(
            f"benchmarks/feature_cost.py: no cost spec for the registered method(s) "
            f"{', '.join(missing)}; add one to its method package (a cost.py whose "
            "specs Method.cost_specs returns) describing the stages its features and "
            "classifier run per image"
        )


collect_specs()


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Bench:
    """Where and how to measure."""

    device: torch.device
    dtype: torch.dtype  # generator components' dtype
    quick: bool = False
    #: convolutional models and their inputs channels-last (default: on CUDA)
    channels_last: bool = False
    #: classifiers under bf16 autocast (default: on CUDA, as ``Detector`` scores)
    autocast: bool = False
    compile: bool = False
    batch: int = 8  # the throughput batch
    repeats: int = 3
    #: quick CPU: skip a throughput batch whose estimated time exceeds this many seconds
    quick_budget_s: float = 20.0
    sizes: tuple[int, ...] = SIZES
    timed_sizes: tuple[int, ...] = SIZES
    #: a spec's own ``sizes`` replace ``sizes`` (False when ``--sizes`` names them)
    spec_sizes: bool = True

    def sizes_for(self, spec: CostSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The sizes ``spec`` is counted at and those it is timed at."""
        if spec.sizes is None or not self.spec_sizes:
            return self.sizes, tuple(s for s in self.timed_sizes if s in self.sizes)
        return spec.sizes, (min(spec.sizes),) if self.quick_cpu else spec.sizes

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def quick_cpu(self) -> bool:
        return self.quick and not self.cuda


def count_flops(fn: Callable[[], Any]) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _meta_model(model: Model) -> nn.Module:
    """The architecture without storage; attention is eager on meta (SDPA mask helpers of
    transformers read mask values, which meta tensors lack)."""
    build = opt_builder("eager") if model.name == "blip2_opt_2.7b" else model.build
    if model.name == "blip2_vision_qformer":
        build = lambda: Blip2Prefix("eager")  # noqa: E731
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build().to("meta").eval().requires_grad_(False)


def stage_flops(pipeline: Pipeline, stage: Stage, meta: dict[str, nn.Module]) -> int:
    """FLOPs of ONE call of ``stage`` for ONE image (its ``rows`` rows)."""
    if stage.model not in meta:
        meta[stage.model] = _meta_model(_find(pipeline, stage.model))
    model = meta[stage.model]
    args = stage.inputs(stage.rows, torch.device("meta"), torch.float32)
    if stage.run is greedy_caption:
        # One forward over the whole sequence (prefix + caption): the matmul FLOPs of a
        # cached greedy decode, give or take the logits of the prefix positions.
        width = OPT_2_7B["hidden_size"]
        embeds = torch.empty(1, BLIP2_QUERY_TOKENS + 1 + CAPTION_TOKENS, width, device="meta")
        return count_flops(lambda: lm_full_sequence(model, embeds))
    return count_flops(lambda: stage.run(model, *args))


def _find(pipeline: Pipeline, name: str) -> Model:
    for model in pipeline.models:
        if model.name == name:
            return model
    raise KeyError(f"stage model {name!r} is not among the pipeline's models")


def flops_report(
    spec: CostSpec, size: int, meta: dict[str, nn.Module] | None = None
) -> dict[str, Any]:
    """FLOPs of every stage of ``spec`` at ``size``, per call and per image; ``meta`` caches
    the meta-device models between calls."""
    pipeline = spec.pipeline(size)
    meta = {} if meta is None else meta
    stages: dict[str, Any] = {}
    total = 0
    for stage in pipeline.stages:
        one = stage_flops(pipeline, stage, meta)
        per_image = one * stage.calls
        stages[stage.name] = {
            "model": stage.model,
            "flops_per_call": one,
            "calls_per_image": stage.calls,
            "rows_per_image": stage.rows,
            "per_image": stage.per_image,
            "flops_per_image": per_image if stage.per_image else None,
            "flops_per_prompt": None if stage.per_image else one,
        }
        if stage.per_image:
            total += per_image
    for entry in stages.values():
        if entry["per_image"]:
            entry["flops_share"] = round(entry["flops_per_image"] / total, 4) if total else None
    return {"flops_per_image": total, "stages": stages}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(bench: Bench) -> contextlib.AbstractContextManager:
    if bench.autocast:
        return torch.autocast(bench.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seconds_per_call(fn: Callable[[], Any], bench: Bench, *, repeats: int) -> float:
    """Seconds of one call: CUDA events over ``repeats`` calls (mean), or the best of
    ``repeats`` wall-clock calls on a CPU."""
    if bench.cuda:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize(bench.device)
        return start.elapsed_time(end) / 1000 / repeats
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Memory:
    """Peak memory of a block above a baseline taken before the method's models existed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.how = self._how()
        self.baseline = self._current()

    def _how(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocation before the models"
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return "peak RSS (VmHWM, reset per measurement) above the RSS before the models"
        except OSError:
            return "peak RSS (ru_maxrss, process lifetime) above the RSS before the models"

    def _current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _status_kb("VmRSS") * 1024

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "VmHWM" in self.how:
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif "VmHWM" in self.how:
            peak = _status_kb("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(0, peak - self.baseline)


def _status_kb(field_name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def attention_processors(module: nn.Module) -> list[str]:
    """diffusers attention processor classes in ``module``; a plain ``AttnProcessor`` (no
    SDPA) anywhere is an error, since it would make every attention several times slower."""
    processors = getattr(module, "attn_processors", None)
    if not processors:
        return []
    names = sorted({type(p).__name__ for p in processors.values()})
    if "AttnProcessor" in names:
        raise RuntimeError(f"{type(module).__name__} uses the plain AttnProcessor, not SDPA")
    return names


def build_model(model: Model, bench: Bench) -> tuple[nn.Module, dict[str, Any]]:
    """A randomly initialised model on the bench's device, frozen, set up for the GPU path."""
    with torch.device(bench.device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = model.build()
    # Buffers made by legacy constructors (torch.Tensor(list)) ignore the device context.
    module = module.to(bench.device).eval().requires_grad_(False)
    if model.generator and bench.dtype != torch.float32:
        module = module.to(bench.dtype)
    info: dict[str, Any] = {
        "parameters": sum(p.numel() for p in module.parameters()),
        "dtype": str(bench.dtype if model.generator else torch.float32).removeprefix("torch."),
    }
    if bench.channels_last and model.convolutional:
        module = module.to(memory_format=torch.channels_last)
        info["channels_last"] = True
    processors = attention_processors(module)
    if processors:
        info["attention_processors"] = processors
    if bench.compile and model.compile:
        for target in model.compile:
            if target:
                setattr(module, target, torch.compile(getattr(module, target)))
            else:
                module = torch.compile(module)
        info["compiled"] = list(model.compile)
    return module, info


def _inputs(stage: Stage, rows: int, bench: Bench, model: Model) -> tuple[Any, ...]:
    dtype = bench.dtype if model.generator else torch.float32
    args = stage.inputs(rows, bench.device, dtype)
    if bench.channels_last and model.convolutional:
        args = tuple(
            a.contiguous(memory_format=torch.channels_last)
            if isinstance(a, torch.Tensor) and a.dim() == 4 and a.is_floating_point()
            else a
            for a in args
        )
    return args


WARMUP_SIZE = 64  # --quick on a CPU warms each stage up at this size


def time_pipeline(
    spec: CostSpec,
    size: int,
    flops: dict[str, Any],
    bench: Bench,
    built: dict[str, nn.Module],
    memory: Memory,
) -> dict[str, Any]:
    """Seconds per image of every stage at batch 1 and the throughput batch; images/s, peak
    memory and (CUDA) model-FLOP utilisation."""
    pipeline = spec.pipeline(size)
    models = {m.name: m for m in pipeline.models}
    warm_pipeline = spec.pipeline(WARMUP_SIZE) if bench.quick_cpu else pipeline
    warmup = {stage.name: stage for stage in warm_pipeline.stages}
    peak = peak_bf16_flops(device_name(bench.device)) if bench.cuda else None
    batches = [1] if bench.batch == 1 else [1, bench.batch]
    result: dict[str, Any] = {"images_per_s": {}, "peak_memory_bytes": {}, "stages": {}}
    skipped: dict[str, str] = {}
    per_image_1: dict[str, float] = {}
    for batch in batches:
        if batch > 1 and bench.quick_cpu:
            estimate = batch * sum(per_image_1.values())
            if estimate > bench.quick_budget_s:
                skipped[str(batch)] = (
                    f"--quick on a CPU: batch {batch} would take about {estimate:.0f} s"
                )
                continue
        memory.reset()
        times: dict[str, float] = {}
        estimated: dict[str, str] = {}
        for stage in pipeline.stages:
            if stage.same_as is not None:
                times[stage.name] = times[stage.same_as]
                continue
            if bench.quick_cpu and stage.estimate_quick_cpu_from:
                source = stage.estimate_quick_cpu_from
                rate = flops["stages"][source]["flops_per_call"] * batch / times[source]
                one = flops["stages"][stage.name]["flops_per_call"]
                times[stage.name] = one * batch / rate
                estimated[stage.name] = (
                    f"not run (--quick on a CPU): its FLOPs at {source}'s achieved FLOP/s, a "
                    "lower bound (a small-batch greedy decode is memory-bound)"
                )
                continue
            model = models[stage.model]
            if stage.model not in built:
                built[stage.model], info = build_model(model, bench)
                result.setdefault("models", {})[stage.model] = info
            module = built[stage.model]
            rows = stage.rows * batch
            # A quick CPU run warms up at a small size: that pays the one-off costs
            # (allocator, lazy initialisation, thread pools) at a fraction of a full call.
            small = warmup[stage.name]
            warm = _inputs(small, small.rows * (1 if bench.quick_cpu else batch), bench, model)
            args = _inputs(stage, rows, bench, model)
            with torch.inference_mode(), _autocast(bench):
                for _ in range(2 if bench.cuda else 1):
                    stage.run(module, *warm)
                synchronize(bench.device)
                repeats = 1 if bench.quick_cpu else (10 if bench.cuda else bench.repeats)
                call = lambda module=module, args=args, stage=stage: stage.run(module, *args)  # noqa: E731
                seconds = seconds_per_call(call, bench, repeats=repeats)
                if bench.quick_cpu and seconds < 1.0:
                    # Cheap calls are noisy, and --quick skipped their full-size warm-up.
                    seconds = min(seconds, seconds_per_call(call, bench, repeats=3))
                times[stage.name] = seconds
            del args, warm
        result["peak_memory_bytes"][str(batch)] = memory.peak()
        total = 0.0
        for stage in pipeline.stages:
            entry = result["stages"].setdefault(stage.name, {"seconds_per_image": {}})
            seconds = times[stage.name] * stage.calls / batch
            entry["seconds_per_image"][str(batch)] = round(seconds, 6)
            if stage.name in estimated:
                entry["estimated"] = estimated[stage.name]
            one = flops["stages"][stage.name]["flops_per_call"]
            rate = one * batch / times[stage.name] if times[stage.name] > 0 else None
            entry.setdefault("flop_per_s", {})[str(batch)] = rate and round(rate, -6)
            if peak and rate and stage.name not in estimated:
                entry.setdefault("mfu", {})[str(batch)] = round(rate / peak, 4)
            if stage.per_image:
                total += seconds
                if batch == 1:
                    per_image_1[stage.name] = seconds
        result["images_per_s"][str(batch)] = round(1 / total, 6) if total > 0 else None
        for stage in pipeline.stages:
            if stage.per_image and total > 0:
                share = result["stages"][stage.name]["seconds_per_image"][str(batch)] / total
                result["stages"][stage.name].setdefault("time_share", {})[str(batch)] = round(
                    share, 4
                )
    if skipped:
        result["skipped_batches"] = skipped
    return result


def release_memory() -> None:
    """Hand freed memory back: the CUDA cache, and glibc's heap (``malloc_trim``), without
    which a freed model's pages stay resident and hide the next method's peak RSS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Free big models between methods (they do not fit side by side on small machines)."""
    release_memory()
    try:
        yield
    finally:
        release_memory()


def measure(spec: CostSpec, bench: Bench, *, flops_only: bool = False) -> dict[str, Any]:
    """One spec's JSON entry: FLOPs at every size, timings at ``bench.timed_sizes``."""
    entry: dict[str, Any] = {
        "method": spec.method,
        "what": spec.what,
        "size_means": spec.size_means,
        "default_size": spec.default_size,
        "sizes": {},
    }
    start = time.perf_counter()
    meta: dict[str, nn.Module] = {}
    sizes, timed = bench.sizes_for(spec)
    flops = {size: flops_report(spec, size, meta) for size in sizes}
    del meta
    for size, report in flops.items():
        entry["sizes"][str(size)] = dict(report)
        entry["note"] = spec.pipeline(size).note
    entry["flops_seconds"] = round(time.perf_counter() - start, 2)
    if flops_only:
        entry["timing"] = "FLOPs only"
        return entry
    if not bench.cuda and not spec.time_cpu:
        entry["timing"] = "not timed on a CPU (models too big for its memory in float32)"
        return entry
    if bench.quick_cpu and not spec.time_quick_cpu:
        entry["timing"] = "not timed by --quick on a CPU"
        return entry
    with released():
        built: dict[str, nn.Module] = {}
        memory = Memory(bench.device)
        entry["memory_measure"] = memory.how
        start = time.perf_counter()
        for size in timed:
            timing = time_pipeline(spec, size, flops[size], bench, built, memory)
            stages = timing.pop("stages")
            entry.setdefault("models", {}).update(timing.pop("models", {}))
            target = entry["sizes"][str(size)]
            for name, figures in stages.items():
                target["stages"][name].update(figures)
            target.update(timing)
        entry["timing_seconds"] = round(time.perf_counter() - start, 1)
        del built
    return entry


# --------------------------------------------------------------------------------------------
# Report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ratios(
    methods: dict[str, dict[str, Any]], slow: str = COMPARE[0], fast: str = COMPARE[1]
) -> dict[str, Any]:
    """``slow`` over ``fast`` per size: how many times more FLOPs and time ``slow`` spends
    per image (keys ``<slow>_over_<fast>_<size>``)."""
    if not {slow, fast} <= methods.keys():
        return {}
    out: dict[str, Any] = {"compared": [slow, fast]}
    if (slow, fast) in PAPER_CLAIMS:
        out["paper_claim"] = PAPER_CLAIMS[slow, fast]
    for size, quick in methods[fast]["sizes"].items():
        slower = methods[slow]["sizes"].get(size)
        if slower is None:
            continue
        row: dict[str, Any] = {
            "flops": round(slower["flops_per_image"] / quick["flops_per_image"], 1),
        }
        for batch, rate in quick.get("images_per_s", {}).items():
            other = slower.get("images_per_s", {}).get(batch)
            if rate and other:
                row[f"time_batch{batch}"] = round(rate / other, 1)
        out[f"{slow}_over_{fast}_{size}"] = row
    return out


def report_header(bench: Bench) -> dict[str, Any]:
    return {
        "benchmark": "feature_cost",
        "device": str(bench.device),
        "device_name": device_name(bench.device),
        "generator_dtype": str(bench.dtype).removeprefix("torch."),
        "classifier_dtype": "float32 under bf16 autocast" if bench.autocast else "float32",
        "channels_last": bench.channels_last,
        "autocast": "bfloat16" if bench.autocast else None,
        "sdpa": "diffusers AttnProcessor2_0 (checked), timm fused attention, transformers sdpa",
        "compile": bench.compile,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "quick": bench.quick,
        "flops_sizes": list(bench.sizes),
        "timed_sizes": list(bench.timed_sizes),
        "batch_sizes": [1, bench.batch] if bench.batch > 1 else [1],
        "peak_bf16_flops": peak_bf16_flops(device_name(bench.device)) if bench.cuda else None,
        "timing": (
            "each stage timed alone, after a warm-up, times its calls per image; "
            + (
                "CUDA events, mean of 10 calls"
                if bench.cuda
                else f"best of {1 if bench.quick else bench.repeats} wall-clock calls"
            )
            + ("; --quick on a CPU warms up at 64 px" if bench.quick_cpu else "")
        ),
    }


def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}"


def markdown(reports: Sequence[dict[str, Any]]) -> str:
    """One README table over one or more runs (e.g. a CPU and a GPU JSON)."""
    lines = [
        "| method | size | FLOP / image | img/s, batch 1 | img/s, batch N | "
        "peak memory, batch 1 / N | device |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    notes: list[str] = []
    for report in reports:
        batches = report.get("batch_sizes", [1])
        big = str(batches[-1])
        device = f"{report['device_name']}, {report['generator_dtype']}"
        if report["device"] == "cpu":
            device += f", {report['threads']} threads"
        for name, entry in report["methods"].items():
            # an untimed entry's FLOPs are the architecture's, not the device's
            where = "FLOPs only" if isinstance(entry.get("timing"), str) else device
            for size, figures in entry["sizes"].items():
                rates = figures.get("images_per_s", {})
                mem = figures.get("peak_memory_bytes", {})
                if rates:
                    mem_text = " / ".join(_si(mem.get(b), "B") for b in ("1", big) if b in mem)
                else:
                    mem_text = "—"
                big_rate = _rate(rates.get(big)) if big != "1" else "—"
                if big != "1" and big in rates:
                    big_rate += f" (N={big})"
                lines.append(
                    f"| {name} | {size} | {_si(figures['flops_per_image'])} | "
                    f"{_rate(rates.get('1'))} | {big_rate} | {mem_text} | {where} |"
                )
        if report.get("peak_bf16_flops"):
            for name, entry in report["methods"].items():
                for size, figures in entry["sizes"].items():
                    mfu = [
                        f"{stage} {max(values['mfu'].values()):.0%}"
                        for stage, values in figures["stages"].items()
                        if values.get("mfu")
                    ]
                    if mfu:
                        notes.append(
                            f"model-FLOP utilisation, {name} at {size} px "
                            f"({report['device_name']}, best batch): " + ", ".join(mfu)
                        )
        compared = report.get("ratios", {})
        slow, fast = compared.get("compared", COMPARE)  # reports before --compare: the default
        claim = compared.get("paper_claim")
        for key, row in compared.items():
            if key.startswith(f"{slow}_over_{fast}_"):
                size = key.rsplit("_", 1)[1]
                timed = ", ".join(
                    f"{v}x time at batch {k.removeprefix('time_batch')}"
                    for k, v in row.items()
                    if k.startswith("time_batch")
                )
                notes.append(
                    f"{slow} / {fast} at {size} px ({report['device_name']}): {row['flops']}x "
                    f"the FLOPs{', ' + timed if timed else ''}"
                    + (f" (the paper: {claim})" if claim else "")
                )
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", help="a cost spec (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="CPU: 256 px, single calls")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help=f"working sizes of every spec (default: {SIZES}, the families' specs {FAMILY_SIZES})",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="throughput batch (default: 16 CUDA, 4 CPU)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    for flag, what in (("channels-last", "channels-last convolutions"), ("autocast", "autocast")):
        parser.add_argument(
            f"--{flag}",
            choices=("auto", "on", "off"),
            default="auto",
            help=f"bf16 {what} (auto: on CUDA only)"
            if flag == "autocast"
            else what + " (auto: on CUDA only)",
        )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("SLOW", "FAST"),
        default=COMPARE,
        help="the two cost specs whose FLOPs and time per image are divided "
        f"(default: {' '.join(COMPARE)}, the paper's pair)",
    )
    parser.add_argument("--output", type=Path, help="write the JSON here too")
    parser.add_argument("--markdown", action="store_true", help="print the README table too")
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="print the README table of these JSON files (merged) and exit",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the cost specs measured at the common sizes (every method's, not the "
        "families' rows), one per line, and exit",
    )
    args = parser.parse_args(argv)
    if args.list:
        common = [name for name, spec in COST_SPECS.items() if spec.sizes is None]
        print("\n".join(common))
        return {"specs": common}
    if args.table:
        reports = [json.loads(path.read_text()) for path in args.table]
        print(markdown(reports))
        return {"reports": reports}
    check_specs()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Random weights can drive activations into denormals, which are 100x slower on CPUs.
    torch.set_flush_denormal(True)
    from ldmdetect.generative.loading import default_dtype, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = tuple(args.sizes or SIZES)
    bench = Bench(
        device=device,
        dtype=default_dtype(device),
        quick=args.quick,
        channels_last=args.channels_last == "on" or (args.channels_last == "auto" and cuda),
        autocast=args.autocast == "on" or (args.autocast == "auto" and cuda),
        compile=args.compile,
        batch=args.batch or (16 if cuda else 4),
        sizes=sizes,
        # --quick on a CPU times one size: 256 px, or the smallest asked for
        timed_sizes=(256 if 256 in sizes else min(sizes),) if args.quick and not cuda else sizes,
        spec_sizes=args.sizes is None,
    )
    names = args.method or list(COST_SPECS)
    unknown = [n for n in names if n not in COST_SPECS]
    if unknown:
        parser.error(f"unknown cost spec(s) {unknown}; known: {', '.join(COST_SPECS)}")
    report = report_header(bench)
    report["methods"] = {}
    for name in names:
        start = time.perf_counter()
        report["methods"][name] = measure(COST_SPECS[name], bench, flops_only=args.flops_only)
        report["methods"][name]["benchmark_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {report['methods'][name]['benchmark_seconds']} s", file=sys.stderr)
    report["ratios"] = ratios(report["methods"], *args.compare)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if args.markdown:
        print(markdown([report]))
    return report


if __name__ == "__main__":
    main()
