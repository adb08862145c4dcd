"""Decode-step matrix kernels for CPU ``nn.Linear`` layers, chosen by measuring them on this CPU.

During a decode step each row brings one position, so every linear layer multiplies a few rows by its weight.
Which way is faster depends on the CPU and its BLAS: on one machine MKL ran ``x @ Wᵀ`` for 2 rows at half the
speed of ``W @ xᵀ``, on another it is the other way round. So nothing is hard-coded: the first time the decode
loop steps a batch of a given size (rounded up to a power of two; the first batch of more than one row measures
2, 4, 8 and 16 rows at once, so a busy batch never stalls for it), every candidate is timed on the model's own
layers, each read once per sweep in the model's order as a decode step reads them (from memory: timing one
layer over and over runs it from the CPU's cache and once chose a kernel 1.7× slower in the model), interleaved
and repeated, and the faster is kept for each (rows, shape); the library's ``x @ Wᵀ`` stays unless another is
clearly faster. The candidates: the library's ``x @ Wᵀ``, ``W @ xᵀ``, and oneDNN with each weight prepacked in
its blocked layout (a copy of the weights, so only while it fits in a quarter of the available memory). Every
candidate returns a row-major result: the next layer's input in the layout it was timed
with (a transposed one made MKL 4× slower in the MLP's down projection). Choices are cached per CPU model, torch
version and thread count in ``$PLAYGROUND_CACHE/decode-kernels.json``, so a later start skips the timing. GPUs
and quantized layers keep their own kernels (only plain float32 CPU ``nn.Linear`` is touched); prefill keeps the
usual path.

A candidate is used for one row only when it gives the library's numbers bit for bit, so a single column still
reproduces ``generate()`` exactly.

    >>> import torch
    >>> layer = torch.nn.Linear(8, 4)
    >>> model = torch.nn.Sequential(layer)
    >>> with DecodeKernels(model, cache=None) as kernels:
    ...     kernels.use(rows=2)
    ...     y = model(torch.ones(2, 1, 8))
    >>> sorted(kernels.describe()["choices"]["2"]) == ["4x8"]
    True
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.weak import WeakIdKeyDictionary

# oneDNN's copy of each weight in its own blocked layout, made on first use and freed with the weight. A BLAS
# call repacks the weight on every product, which a decode step reading each weight once from memory pays in
# full: on one CPU the prepacked copy made a 16-row step of the embedded model 1.5× faster (124 → 84 ms).
_prepacked = WeakIdKeyDictionary()


def _prepacked_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    packed = _prepacked.get(weight)
    if packed is None:
        packed = _prepacked[weight] = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_size=16)
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


# Each candidate computes x @ Wᵀ for x of shape [rows, in] and W of shape [out, in], row-major.
CANDIDATES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "x_wt": lambda x, weight: torch.nn.functional.linear(x, weight),  # the library's kernel
    "w_xt": lambda x, weight: torch.mm(weight, x.T).T.contiguous(),  # weight-stationary: W @ xᵀ
}
if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
    CANDIDATES["prepacked"] = _prepacked_linear  # a copy of every weight it runs on: see prepacked_fits
LIBRARY = "x_wt"
MARGIN = 0.05  # another kernel replaces the library's only when at least this much faster
ROUNDS = 3
# Batch sizes (buckets) measured together the first time a decode has more than one row: a shared server meets
# them all under ordinary load, and measuring one in the middle of a busy batch would stall every run in it.
SHARED_BUCKETS = (2, 4, 8, 16)
METHOD = 3  # how choices are measured; cached choices measured otherwise are measured again

_forced: str | None = os.environ.get("PLAYGROUND_DECODE_KERNEL") or None
_lock = threading.Lock()
_tables: dict[tuple, dict[str, str]] = {}  # (cache file, (cpu, torch, threads)) -> {"rows:out:in": kernel}


def prepacked_fits(weight_bytes: int) -> bool:
    """Whether the prepacked kernel may copy weights of ``weight_bytes``: at most a quarter of the memory the
    system has available now (Linux's MemAvailable; elsewhere, never)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return weight_bytes <= int(line.split()[1]) * 1024 // 4
    return False


def cpu_name() -> str:
    """The CPU's model name (what the cached choices are keyed by)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bucket(rows: int) -> int:
    """The measured batch size standing for ``rows``: the next power of two."""
    return 1 << max(rows - 1, 0).bit_length()


@contextlib.contextmanager
def forced(name: str | None):
    """Use kernel ``name`` for every shape (tests, or ``PLAYGROUND_DECODE_KERNEL``); None measures again.
    A single row still takes the library's kernel unless ``name`` gives the same numbers bit for bit."""
    global _forced
    if name is not None and name not in CANDIDATES:
        raise ValueError(f"decode kernel must be one of {sorted(CANDIDATES)}, got {name!r}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def _default_cache() -> Path:
    from .models import cache_root

    return cache_root() / "decode-kernels.json"


def measure(layers: list[torch.Tensor], rows: int, rounds: int = ROUNDS,
            candidates: Sequence[str] = ()) -> dict[tuple[int, int], tuple[str, dict[str, float]]]:
    """Time every candidate (or those named in ``candidates``) for ``rows`` rows on ``layers`` (weights in the
    model's order), each candidate sweeping every layer once per round, interleaved so each sees the same machine;
    return per weight shape the kernel to use and each candidate's best seconds per sweep of that shape's layers.
    For one row only the candidates that give the library's numbers bit for bit compete."""
    names = [name for name in CANDIDATES if not candidates or name in candidates or name == LIBRARY]
    with torch.inference_mode():
        chosen = _measure(layers, rows, rounds, names)
    for weight in layers:  # the prepacked copies are made again, on first use, for the weights that use them
        _prepacked.pop(weight, None)
    return chosen


def _measure(layers: list[torch.Tensor], rows: int, rounds: int, names: list[str]) -> dict:
    generator = torch.Generator().manual_seed(0)
    inputs = {weight.shape[1]: torch.randn(rows, weight.shape[1], generator=generator, dtype=weight.dtype)
              for weight in layers}
    eligible: dict[tuple[int, int], list[str]] = {}
    for weight in layers:
        shape = tuple(weight.shape)
        if shape not in eligible:
            x = inputs[shape[1]]
            eligible[shape] = [name for name in names
                               if rows > 1 or torch.equal(CANDIDATES[name](x, weight), CANDIDATES[LIBRARY](x, weight))]
    best = {shape: dict.fromkeys(competing, float("inf")) for shape, competing in eligible.items()}
    for _ in range(rounds):
        for name in names:
            kernel, spent = CANDIDATES[name], dict.fromkeys(eligible, 0.0)
            for weight in layers:
                shape = tuple(weight.shape)
                if name in eligible[shape]:
                    started = time.perf_counter()
                    kernel(inputs[shape[1]], weight)
                    spent[shape] += time.perf_counter() - started
            for shape, seconds in spent.items():
                if name in best[shape]:
                    best[shape][name] = min(best[shape][name], seconds)
    chosen = {}
    for shape, seconds in best.items():
        fastest = min(seconds, key=seconds.get)
        chosen[shape] = (fastest if seconds[fastest] < (1 - MARGIN) * seconds[LIBRARY] else LIBRARY, seconds)
    return chosen


def _patchable(module: torch.nn.Module) -> bool:
    return (type(module) is torch.nn.Linear and module.weight.device.type == "cpu"
            and module.weight.dtype == torch.float32 and "forward" not in module.__dict__)


def _decode_forward(kernels: DecodeKernels, self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[-2] != 1:  # prefill (several positions per row): the usual path
        return torch.nn.functional.linear(x, self.weight, self.bias)
    kernel = kernels.current.get(self.weight.shape)
    if kernel is None or kernel is CANDIDATES[LIBRARY]:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    out = kernel(x.reshape(-1, x.shape[-1]), self.weight)
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], -1)


class DecodeKernels:
    """While entered, the model's plain float32 CPU linear layers run decode steps with the kernel measured
    fastest for the batch size given to :meth:`use` (the decode loop calls it before each forward pass)."""

    def __init__(self, model: torch.nn.Module, cache: Path | None | str = "default"):
        self.model = model
        self.cache = _default_cache() if cache == "default" else cache
        self.layers = [module.weight for module in model.modules() if _patchable(module)]  # to time on
        self.allowed = [name for name in CANDIDATES
                        if name != "prepacked" or prepacked_fits(sum(w.numel() * w.element_size() for w in self.layers))]
        self.weights = {}  # (out, in) -> the first weight of that shape
        for weight in self.layers:
            self.weights.setdefault(tuple(weight.shape), weight)
        self.current: dict[tuple[int, int], Callable] = {}
        self._rows = None

    def __enter__(self) -> DecodeKernels:
        forward = functools.partial(_decode_forward, self)
        for module in self.model.modules():
            if _patchable(module):
                module.forward = functools.partial(forward, module)
        return self

    def __exit__(self, *exc) -> None:
        for module in self.model.modules():
            patched = module.__dict__.get("forward")
            if isinstance(patched, functools.partial) and patched.func is _decode_forward:  # partials flatten
                del module.forward
        self._rows = None

    def use(self, rows: int) -> None:
        """Pick each shape's kernel for a decode step of ``rows`` rows (measured on first use of its bucket; the
        first decode of more than one row measures every bucket of SHARED_BUCKETS too)."""
        key = (bucket(rows), _forced)
        if key == self._rows:
            return
        table = self._table()
        size = bucket(rows)
        sizes = sorted({size, *SHARED_BUCKETS}) if size > 1 else [size]
        missing = [n for n in sizes if any(f"{n}:{shape[0]}:{shape[1]}" not in table for shape in self.weights)]
        for n in missing:
            for shape, (kernel, _) in measure(self.layers, n, candidates=self.allowed).items():
                table[f"{n}:{shape[0]}:{shape[1]}"] = kernel
        if missing:
            self._save(table)
        self.current = {shape: CANDIDATES[self._pick(table, size, shape)] for shape in self.weights}
        self._rows = key

    def _pick(self, table: dict[str, str], size: int, shape: tuple[int, int]) -> str:
        if _forced is None:
            chosen = table[f"{size}:{shape[0]}:{shape[1]}"]
            return chosen if chosen in self.allowed else LIBRARY  # measured while a weights' copy still fitted
        if size == 1 and _forced != LIBRARY and not _bit_identical(_forced, self.weights[shape]):
            return LIBRARY
        return _forced

    def describe(self) -> dict:
        """What is in use, for /info and bench: the CPU, the threads, and per batch size each shape's kernel."""
        table = self._table()
        choices: dict[str, dict[str, str]] = {}
        for key in sorted(table, key=lambda key: [int(n) for n in key.split(":")]):
            size, out, inp = map(int, key.split(":"))
            if (out, inp) in self.weights:
                choices.setdefault(str(size), {})[f"{out}x{inp}"] = self._pick(table, size, (out, inp))
        described = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "forced": _forced, "choices": choices}
        if not self.weights:
            described["note"] = "no float32 CPU linear layers (GPU or quantized): the library's kernels throughout"
        return described

    # -- the per-CPU table ---------------------------------------------------------------------------

    def _key(self) -> tuple:
        return cpu_name(), torch.__version__, torch.get_num_threads(), f"method {METHOD}"

    def _table(self) -> dict[str, str]:
        key = self._key()
        with _lock:
            if (self.cache, key) not in _tables:
                _tables[self.cache, key] = self._load().get(" | ".join(map(str, key)), {})
            return _tables[self.cache, key]

    def _load(self) -> dict:
        if self.cache is None:
            return {}
        try:
            data = json.loads(Path(self.cache).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self, table: dict[str, str]) -> None:
        if self.cache is None:
            return
        with _lock, contextlib.suppress(OSError):  # a read-only cache only costs the timing again next start
            data = self._load()
            data[" | ".join(map(str, self._key()))] = dict(table)
            path = Path(self.cache)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
            temporary.replace(path)


def _bit_identical(name: str, weight: torch.Tensor) -> bool:
    x = torch.randn(1, weight.shape[1], generator=torch.Generator().manual_seed(1), dtype=weight.dtype)
    return torch.equal(CANDIDATES[name](x, weight), CANDIDATES[LIBRARY](x, weight))
