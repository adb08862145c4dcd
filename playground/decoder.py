"""One owner per model: a decode loop that runs every active row of every comparison in one batch.

A run (:class:`DecodeRun`: a :class:`~playground.engine.Comparison`) submits its rows; the loop's thread does one
forward pass per step for all of them and hands each run its rows' logits (the run chooses, records and says
which rows go on). Finished rows leave the batch and its KV cache; waiting rows join between steps: their prompts
are prefilled on their own, then their KV cache is merged into the batch's (the shorter side left-padded, the
attention masks extended). Positions are explicit, so the pads are never attended and never shift a row's positions: a row
decodes the same tokens whatever shares its batch. Decoding never waits on a consumer: a comparison's reader
picks up whatever steps were added since it last looked.

    loop = decode_loop(bundle)   # created on first use; its thread ends when idle
    comparison.submit()          # what Comparison.run() does first
    loop.drain()                 # e.g. before loading another model: rows in flight finish
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import math
import os
import threading
import types
import weakref
from collections.abc import Sequence
from typing import Protocol

import torch

from . import lora_batch
from .compat import (
    append_cache_rows,
    cache_rows,
    drop_cache_positions,
    keep_cache_rows,
    mergeable_cache,
    stitch_cache_rows,
    trim_cache,
)
from .kernels import DecodeKernels
from .models import PEFT_BASE, TurnLock, can_mix, only_adapter
from .openmp import release_thread_team

IDLE_SECONDS = 2.0  # an idle loop's thread ends after this; the next submit starts another
LOOP_THREAD = "decode-loop"  # the name of every loop's thread
MAX_ROWS = 64  # rows decoding at once; more wait and join as rows finish
KV_BUDGET_ENV = "PLAYGROUND_KV_BUDGET_MB"
CPU_KV_BUDGET_MB = 2048  # on the CPU the cache shares RAM with everything else: a configured size, not a measure
# On CUDA the budget is the memory free after loading minus this reserve: the forward pass's activations, a
# prefill's attention and the float32 logits of every row, and the allocator's fragmentation.
CUDA_RESERVE_FRACTION = 0.15
CUDA_RESERVE_MIN_BYTES = 1 << 30
MB = 1 << 20
SHUTTING_DOWN = "the server is shutting down: this run stopped; run it again once the server is back"
log = logging.getLogger("playground")


class DecodeRun(Protocol):
    """What the decode loop knows of a run (a :class:`~playground.engine.Comparison`), and all it uses: the loop
    calls :meth:`begin` once when the run's rows join the batch, then :meth:`step` with their logits at every step
    (holding :attr:`lock`) until no row goes on, and :meth:`publish` after each step and once with ``done``."""

    bundle: object  # the LoadedModel whose decode loop runs it
    settings: object  # engine.Settings: max_new_tokens bounds the rows' KV cache
    trace: object  # trace.Trace: its columns' tokens so far and the status ``waiting`` the loop sets
    lock: threading.Lock  # held by the loop while it steps the run's rows or sets their status
    padded_length: int  # the prompts' width, left-padded

    @property
    def row_count(self) -> int:
        """Rows the run decodes."""

    @property
    def cancelled(self) -> bool:
        """Told to stop: a waiting run never joins, a decoding one stops at its next step."""

    def row_adapters(self, rows: Sequence[int]) -> list[str]:
        """PEFT's adapter name for each of the rows ``rows``."""

    def begin(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows join the batch: their prompts' (ids, attention mask), left-padded to one width."""

    def step(self, logits: torch.Tensor, active: list[int]) -> tuple[torch.Tensor | None, list[int]]:
        """Choose the next token of the rows ``active`` from their ``logits``: (the tokens, the positions in
        ``active`` of the rows that go on)."""

    def publish(self, *, done: bool = False, error: BaseException | None = None) -> None:
        """Rows advanced; or (``done``) the run has left the loop, stopped by ``error`` if given."""


# -- the KV budget ---------------------------------------------------------------------------------


class RunStopped(RuntimeError):
    """The decode loop stopped a run (out of memory, a failed step, over the KV budget); the message is a sentence
    for the person who started it."""


def check_budget_mb(value, name: str = "kv_budget_mb") -> float:
    """A KV budget in MB as given by an operator (flag, environment, spaces.yaml): a positive number.

        >>> check_budget_mb("512"), check_budget_mb(0.5)
        (512.0, 0.5)
        >>> check_budget_mb("lots", "--kv-budget-mb")
        Traceback (most recent call last):
        ...
        ValueError: --kv-budget-mb must be a number of megabytes above 0, got 'lots'
    """
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a number of megabytes above 0, got {value!r}")
    return number


def kv_bytes_per_position(model: torch.nn.Module) -> int:
    """Bytes one cached position of one row takes: keys and values in every layer, for the model's key/value heads
    (fewer than its query heads under grouped-query attention), in the dtype the model computes in."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # A 4-bit model's `dtype` is its compute dtype, which its cache is kept in.
    return 2 * config.num_hidden_layers * heads * head_dim * torch.finfo(base.dtype).bits // 8


def kv_budget_bytes(device, kv_budget_mb: float | None = None) -> int:
    """The decode loop's KV budget: ``kv_budget_mb``, else $PLAYGROUND_KV_BUDGET_MB, else on CUDA the memory free
    now (after loading) minus a reserve for activations and logits, else (the CPU) CPU_KV_BUDGET_MB."""
    if kv_budget_mb is None and os.environ.get(KV_BUDGET_ENV, "").strip():
        kv_budget_mb = check_budget_mb(os.environ[KV_BUDGET_ENV].strip(), KV_BUDGET_ENV)
    if kv_budget_mb is not None:
        return int(check_budget_mb(kv_budget_mb) * MB)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(free - max(CUDA_RESERVE_MIN_BYTES, int(free * CUDA_RESERVE_FRACTION)), 0)
    return CPU_KV_BUDGET_MB * MB


class DeviceBudget:
    """The KV budget of one device, shared by the decode loops of every model on it: a second checkpoint's rows
    take the memory the loaded model's rows would take. Each loop holds what its batch may grow to (its committed
    bytes); a run joins a loop only if that, plus what the device's other loops hold, stays within ``total``."""

    def __init__(self, total: int):
        self.total = total
        self.loops: weakref.WeakSet = weakref.WeakSet()
        self.lock = threading.Lock()  # a loop decides who joins and commits it in one go: two never take the same bytes

    def held_by_others(self, loop: DecodeLoop) -> int:
        return sum(other.committed for other in list(self.loops) if other is not loop)

    def in_use(self) -> int:
        """Bytes the device's loops' caches hold now."""
        return sum(loop.bytes_in_use for loop in list(self.loops))

    def wake_others(self, loop: DecodeLoop) -> None:
        """``loop`` holds less now: the other loops' waiting runs may fit (call without holding ``loop``'s lock)."""
        for other in list(self.loops):
            if other is not loop:
                other.wake()


_budgets: dict[str, DeviceBudget] = {}
_budgets_lock = threading.Lock()


def device_budget(device) -> DeviceBudget:
    """The KV budget shared on ``device`` (created with a total of 0: :func:`decode_loop` sets it)."""
    with _budgets_lock:
        return _budgets.setdefault(str(torch.device(device)), DeviceBudget(0))


def peak_positions(width: int, forwards: list[int]) -> int:
    """The most cached positions (rows × width) a batch can hold from now on: each row holds ``width`` positions
    now, every forward pass adds one, and row i leaves after ``forwards[i]`` more passes.

        >>> peak_positions(10, [0, 0])     # both rows choose their last token next: no pass adds a position
        20
        >>> peak_positions(10, [5, 1, 1])  # 3 rows × 11 after one pass; later 1 row × 15
        33
    """
    peak = len(forwards) * width
    for rows, passes in enumerate(sorted(forwards, reverse=True), start=1):
        peak = max(peak, rows * (width + passes))
    return peak


def _forwards_left(comparison: DecodeRun, rows) -> list[int]:
    """Forward passes each of ``rows`` may still take: one per token still to choose, except the last."""
    limit = comparison.settings.max_new_tokens
    return [max(limit - len(comparison.trace.variants[i].token_ids) - 1, 0) for i in rows]


def _joined(comparison: DecodeRun, width: int, forwards: list[int]) -> tuple[int, list[int]]:
    """A batch's (width, forwards left) once ``comparison``'s rows join it: its prompts widen it, and each of its
    rows may take a forward pass for every token but the last."""
    return (max(width, comparison.padded_length),
            forwards + [comparison.settings.max_new_tokens - 1] * comparison.row_count)


def stopped_sentence(error: BaseException, device) -> str:
    """What the person whose run a failure stopped is told."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        where = "the GPU" if torch.device(device).type == "cuda" else "the server"
        return (f"{where} ran out of memory for this run; the others continue. Run it again in a moment, or with "
                "fewer columns or new tokens.")
    detail = (str(error).splitlines() or [""])[0][:200]
    return f"this run stopped: the model failed ({type(error).__name__}{': ' + detail if detail else ''}); the others continue."


# -- LoRA adapters side by side ---------------------------------------------------------------------


def forward_rows(model, adapters: list[str], **inputs):
    """One forward pass of the batch whose rows use the PEFT adapters ``adapters`` (one name per row, "__base__"
    for the base model). Rows of plain LoRA adapters share the pass (the base layers run once for every row, each
    adapter's update weighted onto its own rows: :mod:`playground.lora_batch`, else PEFT's mixed adapter batch);
    adapters PEFT cannot mix take turns."""
    if not hasattr(model, "peft_config") or (len(set(adapters)) == 1 and adapters[0] == model.active_adapter):
        return model(**inputs)
    if lora_batch.supports(model, adapters):
        with lora_batch.mixed_rows(model, adapters):
            return model(**inputs)
    if all(can_mix(model, name) for name in set(adapters)):
        return model(**inputs, adapter_names=adapters)
    return _take_turns(model, adapters, **inputs)


def _take_turns(model, adapters: list[str], *, input_ids, attention_mask, position_ids, cache=None, **inputs):
    """The batch's forward pass as one pass per adapter on its own rows (their slice of the cache), stitched
    back together in batch order: what rows of an adapter PEFT cannot mix (DoRA) pay instead of sharing."""
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(adapters):
        groups.setdefault(name, []).append(row)
    outputs = []
    for name, rows in groups.items():
        index = torch.tensor(rows, device=input_ids.device)
        rows_cache = cache_rows(cache, index) if cache is not None else None  # the group's rows of the batch cache
        with only_adapter(model, name):
            out = model(input_ids=input_ids[index], attention_mask=attention_mask[index],
                        position_ids=position_ids[index], cache=rows_cache, **inputs)
        outputs.append((index, out))
    first = outputs[0][1]
    logits = first.logits.new_empty((len(adapters), *first.logits.shape[1:]))
    cache = cache if cache is not None else first.cache
    stitch_cache_rows(cache, [(index, out.cache) for index, out in outputs], len(adapters))
    for index, out in outputs:
        logits[index] = out.logits
    return types.SimpleNamespace(logits=logits, cache=cache)


class _Member:
    """A comparison in the batch: its rows still decoding (original row indices, in batch order)."""

    def __init__(self, comparison: DecodeRun, active: list[int]):
        self.comparison, self.active = comparison, active
        self.error: BaseException | None = None


class DecodeLoop:
    """The batch of rows decoding on one model, stepped by one daemon thread. Get it with :func:`decode_loop`.

    Its KV cache stays within what the device's KV budget (``kv_budget`` bytes, shared with the loops of the other
    models on the device) leaves it: a run joins only when the batch's padded positions (rows × width, padding
    included) can hold every row's prompt and every token it may still generate; until then it waits, and its
    columns' status says so. An out-of-memory error (or any error) in a prefill, a merge or a step
    stops the newest run with a sentence and frees its cache; the other runs retry and decode what they would have.
    """

    def __init__(self, model: torch.nn.Module, device, max_rows: int = MAX_ROWS, owner=None):
        self._model = weakref.ref(model)  # the thread holds the model while it runs; an idle loop does not
        # The model's owner lock (LoadedModel.owner): held for every forward pass, so a doctor's pass or an
        # adapter change never runs in the middle of a step
        self.owner = owner if owner is not None else TurnLock()
        self._pauses = 0  # paused() blocks: while above 0, waiting runs do not join
        self._admitting = False  # runs taken from the queue are being prefilled (in neither queue nor batch)
        self._closing: str | None = None  # once closed (the process is ending): what every run is told
        self.device, self.max_rows = device, max_rows
        self.position_bytes = kv_bytes_per_position(model)
        self.budget = device_budget(device)
        self.budget.loops.add(self)
        self.committed = 0  # bytes this batch may grow to: what the device's other loops must leave it
        self._joining: list = []  # comparisons admitted by _take_waiting that have not joined the batch yet
        self.peak_positions = 0  # the most positions the cache has held since start (a prefill's included)
        self._in_use = 0
        self._padding = 0.0  # fraction of the cached positions that are padding
        self._cv = threading.Condition()
        self._waiting: collections.deque = collections.deque()  # submitted comparisons not yet in the batch
        self._members: list[_Member] = []  # in batch order (the newest last); each member's rows are contiguous
        self._thread: threading.Thread | None = None
        self._merge = True  # False once a prefill returns a cache that cannot be merged: one comparison at a time
        # The batch, touched by the loop thread only: KV cache, attention mask (rows × cached positions, on the
        # CPU), each row's next position and the logits its next token is chosen from.
        self._cache = self._mask = self._positions = self._logits = None
        # Decode-step kernels measured on this CPU, in place while the batch has rows (an idle model's own
        # generate() runs unpatched)
        self.kernels: DecodeKernels | None = None

    # -- memory ------------------------------------------------------------------------------------

    @property
    def kv_budget(self) -> int:
        """The device's KV budget in bytes, shared with the loops of the other models on it."""
        return self.budget.total

    @kv_budget.setter
    def kv_budget(self, total: int) -> None:
        self.budget.total = total

    @property
    def bytes_in_use(self) -> int:
        """Bytes the batch's cache holds now (a prefill's beside it included)."""
        return self._in_use * self.position_bytes

    def wake(self) -> None:
        """Look at the waiting runs again: memory another loop held may have been freed."""
        with self._cv:
            self._cv.notify_all()

    @property
    def budget_positions(self) -> int:
        """Cached positions (rows × width) the KV budget holds."""
        return self.kv_budget // self.position_bytes

    def _plan(self) -> tuple[int, list[int]]:
        """The batch's width and its rows' forward passes still to come: what :func:`peak_positions` reads."""
        width = self._mask.shape[1] if self._mask is not None else 0
        return width, [f for m in self._members for f in _forwards_left(m.comparison, m.active)]

    def _commit(self) -> None:
        """Note what the batch may grow to now (after rows joined or left); if that shrank, wake the device's
        other loops, whose waiting runs may fit now."""
        width, forwards = self._plan()
        for comparison in self._joining:  # admitted, not in the batch yet: their memory stays theirs
            width, forwards = _joined(comparison, width, forwards)
        with self.budget.lock:
            committed, self.committed = self.committed, peak_positions(width, forwards) * self.position_bytes
        if self.committed < committed:
            self.budget.wake_others(self)

    def check_fits(self, comparison: DecodeRun) -> None:
        """ValueError with a sentence naming the limit when ``comparison`` cannot fit the KV budget even alone."""
        rows, prompt, new = comparison.row_count, comparison.padded_length, comparison.settings.max_new_tokens
        needed = peak_positions(prompt, [new - 1] * rows)
        if needed > self.budget_positions:
            raise ValueError(
                f"max_new_tokens: this run needs up to {needed * self.position_bytes / MB:.3g} MB of KV cache "
                f"({rows} column{'s' * (rows > 1)} × ({prompt} prompt + {new} new tokens)), more than this server's "
                f"KV budget of {self.kv_budget / MB:.3g} MB (kv_budget_mb): lower max_new_tokens, use fewer columns "
                "or shorten the prompt")

    def memory(self) -> dict:
        """The KV cache against its budget, in MB (peak since start), and the rows waiting to join."""
        with self._cv:
            waiting = sum(c.row_count for c in self._waiting)
        return {"kv_budget_mb": round(self.kv_budget / MB, 2),
                "kv_in_use_mb": round(self.bytes_in_use / MB, 2),
                "kv_in_use_on_device_mb": round(self.budget.in_use() / MB, 2),
                "kv_peak_mb": round(self.peak_positions * self.position_bytes / MB, 2),
                "kv_padding_fraction": round(self._padding, 3), "rows_waiting": waiting}

    def _record(self, beside: int = 0) -> None:
        """Note the positions the batch's cache holds now, plus ``beside`` held next to it (a prefill's)."""
        held = self._mask.numel() if self._mask is not None else 0
        self._padding = 1 - int(self._mask.sum()) / held if held else 0.0
        self._in_use = held + beside
        self.peak_positions = max(self.peak_positions, self._in_use)

    # -- the callers' side -------------------------------------------------------------------------

    def submit(self, comparison: DecodeRun) -> None:
        """Queue a comparison's rows; they join the batch before the next step (room and memory permitting). A
        comparison that cannot fit the KV budget even alone ends at once with a sentence saying so."""
        try:
            self.check_fits(comparison)
        except ValueError as error:
            comparison.publish(done=True, error=RunStopped(str(error)))
            return
        with self._cv:
            closing = self._closing
            if closing is None:
                self._waiting.append(comparison)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name=LOOP_THREAD, daemon=True)
                    self._thread.start()
                self._cv.notify_all()
        if closing is not None:  # the process is ending
            comparison.publish(done=True, error=RunStopped(closing))

    @property
    def rows_in_flight(self) -> int:
        """Rows decoding or waiting to join."""
        with self._cv:
            return self.rows_decoding + sum(c.row_count for c in self._waiting)

    @property
    def rows_decoding(self) -> int:
        """Rows in the batch now (not those waiting to join)."""
        with self._cv:  # reentrant (a Condition's default lock): callers may hold it already
            return sum(len(m.active) for m in self._members)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no row is decoding or waiting (e.g. before loading another model); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._waiting and not self._members and not self._admitting, timeout)

    def close(self, message: str = SHUTTING_DOWN, timeout: float | None = None) -> None:
        """Stop for good (the process is ending): the runs decoding or waiting end with ``message`` after the step
        in progress, later ones at once; returns once the loop's thread has ended (or after ``timeout``)."""
        with self._cv:
            self._closing = message
            thread = self._thread
            self._cv.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @contextlib.contextmanager
    def paused(self):
        """While entered, no row decodes: the rows in the batch finish first, runs submitted meanwhile wait (their
        status says why) and join once it exits. For a change of the model's adapters or layers."""
        with self._cv:
            self._pauses += 1
            self._cv.notify_all()
            self._cv.wait_for(lambda: not self._members and not self._admitting)
        try:
            yield
        finally:
            with self._cv:
                self._pauses -= 1
                self._cv.notify_all()

    # -- the loop thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            with torch.inference_mode():
                model = self._model()
                while self._turn(model):
                    pass
        except BaseException as error:  # a fault in the loop itself: the runs in flight stop; the next submit restarts it
            log.error("the decode loop failed and restarts with the next run: %s: %s", type(error).__name__, error)
            message = (f"this run stopped: the server's decode loop failed ({type(error).__name__}); run it again, "
                       "it restarts")
            del error
            with self._cv:
                stopped = [m.comparison for m in self._members] + list(self._waiting) + self._joining
                self._members, self._waiting, self._thread, self._joining = [], collections.deque(), None, []
                self._admitting = False
                self._cv.notify_all()
            self._reset()
            for comparison in stopped:
                comparison.publish(done=True, error=RunStopped(message))
        finally:
            release_thread_team()  # the thread ends: its OpenMP workers go with it

    def _turn(self, model) -> bool:
        """Runs join, then one step for the batch. False once the loop has been idle long enough to end its thread,
        or once it is closed."""
        with self._cv:
            if self._closing is None and not self._waiting and not self._members:
                self._cv.notify_all()  # wake drain()
                release_thread_team()  # an idle loop's OpenMP threads would slow everybody else's
                if model is None or not self._cv.wait_for(lambda: self._waiting or self._closing is not None,
                                                          IDLE_SECONDS):
                    self._thread = None
                    return False
            closing = self._closing
            if closing is not None:
                stopped = [m.comparison for m in self._members] + list(self._waiting)
                self._members, self._waiting, self._thread = [], collections.deque(), None
                self._cv.notify_all()
        if closing is not None:
            self._reset()
            for comparison in stopped:
                comparison.publish(done=True, error=RunStopped(closing))
            return False
        with self._cv:
            joining, dropped, told = self._take_waiting()
        for comparison in dropped:  # cancelled before it joined
            comparison.publish(done=True)
        for comparison in told:  # its status now says why it waits
            comparison.publish()
        self._joining = list(joining)
        for comparison in joining:
            self._joining.remove(comparison)  # in the batch, stopped, or back in the queue: _join commits either way
            if comparison.cancelled:  # closed while the runs before it were prefilled (a long prompt's take seconds)
                self._commit()
                comparison.publish(done=True)
                continue
            self._join(model, comparison)
        if joining:
            with self._cv:
                self._admitting = False
                self._cv.notify_all()  # wake paused() and drain()
        if self._members:
            self._step(model)
        elif self._waiting:  # the runs wait for memory another model's loop holds: it wakes this one as it frees some
            with self._cv:
                self._cv.wait(IDLE_SECONDS)
        return True

    def _take_waiting(self) -> tuple[list, list, list]:
        """(comparisons that join now, cancelled ones that never will, waiting ones whose status changed); called
        holding the lock. The queue is first come, first served: a run joins when the batch's rows and its KV
        cache at its fullest (every row generating all its tokens) stay within max_rows and the budget."""
        dropped = [c for c in self._waiting if c.cancelled]
        if dropped:
            self._waiting = collections.deque(c for c in self._waiting if not c.cancelled)
        if self._pauses:
            return [], dropped, self._tell_waiting("a model change")
        rows = self.rows_decoding
        width, forwards = self._plan()
        joining, blocked = [], None
        with self.budget.lock:
            others = self.budget.held_by_others(self)  # the device's other models' loops
            while self._waiting:
                comparison = self._waiting[0]
                size = comparison.row_count
                after_width, after_forwards = _joined(comparison, width, forwards)
                peak = peak_positions(after_width, after_forwards) * self.position_bytes
                # A comparison wider than max_rows, or than the budget, joins an empty batch alone (on an idle device).
                if (rows or joining) and (not self._merge or rows + size > self.max_rows):
                    blocked = "room"
                elif (rows or joining or others) and peak + others > self.kv_budget:
                    blocked = "memory"
                if blocked:
                    break
                joining.append(self._waiting.popleft())
                rows, width, forwards = rows + size, after_width, after_forwards
                self.committed = peak
        self._admitting = bool(joining)
        return joining, dropped, self._tell_waiting(blocked)

    def _tell_waiting(self, reason: str | None) -> list:
        """Set each waiting comparison's status to what it waits for and how many runs are ahead of it; returns
        those whose status changed."""
        told = []
        for ahead, comparison in enumerate(self._waiting):
            note = (f"waiting for {reason}: " + ("next in line" if not ahead else f"{ahead} run{'s' * (ahead > 1)} ahead")
                    if reason else None)
            if comparison.trace.variants[0].waiting != note:
                with comparison.lock:
                    for variant in comparison.trace.variants:
                        variant.waiting = note
                told.append(comparison)
        return told

    def _join(self, model, comparison: DecodeRun) -> None:
        """Prefill the comparison's prompts on their own, then merge their cache into the batch's. A failure in
        either stops this comparison alone, with a sentence; the batch is left as it was."""
        if comparison.bundle.model is not model:  # wrapped or unwrapped (first adapter added, last removed) while it waited
            self._commit()
            decode_loop(comparison.bundle).submit(comparison)
            return
        removed = sorted(set(comparison.row_adapters(range(comparison.row_count)))
                         - {PEFT_BASE, *getattr(model, "peft_config", {})})
        if removed:
            self._commit()
            self._stopped(comparison, f"this run stopped: adapter {removed[0]!r} was removed before it started; "
                                      "run it again with a loaded model")
            return
        if not self._members:
            with self.owner:
                self.kernels = DecodeKernels(model).__enter__()
        with comparison.lock:
            for variant in comparison.trace.variants:
                variant.waiting = None
        message = None
        try:
            cache, mask, positions, logits = self._prefill(model, comparison)
            if self._members and not mergeable_cache(cache):  # learnt on this model's first prefill: one run at a time
                self._merge = False
                with self._cv:
                    self._waiting.appendleft(comparison)  # prefilled again once the batch is empty
                self._commit()
                return
            if self._members:
                self._record(beside=mask.numel())
                self._merge_rows(cache, mask, positions, logits)
            else:
                self._cache, self._mask, self._positions, self._logits = cache, mask, positions, logits
                self._merge = self._merge and mergeable_cache(cache)
        except Exception as error:  # the traceback (which holds the cache) goes with `error` at the end of this block
            message = stopped_sentence(error, self.device)
        if message is not None:
            cache = None  # a prefilled cache that could not be merged goes before the memory is handed back
            self._stopped(comparison, message)
            return
        self._record()
        with self._cv:
            self._members = [*self._members, _Member(comparison, list(range(comparison.row_count)))]
        self._commit()

    def _prefill(self, model, comparison: DecodeRun):
        """The comparison's prompts through the model: (cache, mask, each row's next position, last logits). Rows
        with the same prompt on the same model (columns that differ only in their interventions or sampling) are
        one computation: each distinct prompt is prefilled once and its cache and logits are copied to its rows."""
        ids, mask = comparison.begin()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        adapters = comparison.row_adapters(range(comparison.row_count))
        distinct: dict = {}
        of_row = [distinct.setdefault((adapter, tuple(row_ids), tuple(row_mask)), len(distinct))
                  for adapter, row_ids, row_mask in zip(adapters, ids.tolist(), mask.tolist())]
        first = torch.tensor([of_row.index(number) for number in range(len(distinct))])
        # logits_to_keep=1: only the last position's logits, as generate() computes them
        with self.owner:
            out = forward_rows(model, [adapters[i] for i in first.tolist()], input_ids=ids[first].to(self.device),
                               attention_mask=mask[first].to(self.device), position_ids=positions[first].to(self.device),
                               use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1, :].float().cpu()
        if len(distinct) < len(of_row):
            keep_cache_rows(cache, torch.tensor(of_row, device=self.device))
            logits = logits[of_row]
        return cache, mask, positions[:, -1] + 1, logits

    def _merge_rows(self, cache, mask, positions, logits) -> None:
        """Append prefilled rows to the batch, the narrower side left-padded. If it fails (out of memory), the
        batch's layers go back to what they were and the error is raised."""
        rows, width = self._mask.shape
        merged = max(width, mask.shape[1])
        old, new = merged - width, merged - mask.shape[1]
        pad = torch.nn.functional.pad
        merged_mask = torch.cat([pad(self._mask, (old, 0)), pad(mask, (new, 0))])
        try:
            append_cache_rows(self._cache, cache, old, new)
        except BaseException:
            self._restore(rows, width, slice(old, None))  # the layers merged so far: the batch's rows, unpadded
            raise
        self._mask = merged_mask
        self._positions = torch.cat([self._positions, positions])
        self._logits = torch.cat([self._logits, logits])

    def _restore(self, rows: int, width: int, positions: slice) -> None:
        """After a failed merge or forward pass: the layers it changed (they no longer hold ``rows`` × ``width``)
        back to the batch's first ``rows`` and ``positions``."""
        trim_cache(self._cache, rows, width, positions)

    def _step(self, model) -> None:
        """Every comparison takes its step on its rows' logits; finished rows leave; one forward pass for the rest."""
        tokens = self._choose()
        if tokens is not None:
            self._forward_batch(model, tokens)

    def _choose(self) -> torch.Tensor | None:
        """Each comparison chooses its rows' next tokens; finished rows leave the batch. Returns the tokens of the
        rows that go on (None when none does)."""
        offset, keep, tokens, staying, leaving = 0, [], [], [], []
        for member in self._members:
            size = len(member.active)
            try:
                with member.comparison.lock:
                    chosen, still = member.comparison.step(self._logits[offset:offset + size], member.active)
            except Exception as error:  # a failing processor fails its own comparison only
                member.error, still = RunStopped(f"this run stopped: {type(error).__name__}: {error}"), []
            keep += [offset + slot for slot in still]
            if still:
                tokens.append(chosen[still])
                member.active = [member.active[slot] for slot in still]
                staying.append(member)
            else:
                leaving.append(member)
            offset += size
        if len(keep) < offset:
            self._select(keep)
        with self._cv:
            self._members = staying
        if leaving:
            self._commit()
        for member in staying:
            member.comparison.publish()
        for member in leaving:
            member.comparison.publish(done=True, error=member.error)
        return torch.cat(tokens) if staying else None

    def _forward_batch(self, model, tokens: torch.Tensor) -> None:
        """One forward pass for every row. If it fails (out of memory), the newest run stops with a sentence and
        leaves, and the others retry with the same tokens: they decode what they would have without the fault."""
        while True:
            width, message = self._mask.shape[1], None
            try:
                self._forward(model, tokens)
                return
            except Exception as error:  # the traceback (which holds the cache) goes with `error` at the end of this block
                message = stopped_sentence(error, self.device)
            self._restore(len(tokens), width, slice(0, width))  # layers the pass reached had grown by one position
            with self._cv:
                newest, self._members = self._members[-1], self._members[:-1]
            rows = len(tokens) - len(newest.active)  # the newest run's rows are the batch's last
            self._select(list(range(rows)))
            self._stopped(newest.comparison, message)
            if not rows:
                return
            tokens = tokens[:rows]

    def _forward(self, model, tokens: torch.Tensor) -> None:
        self.kernels.use(rows=len(tokens))
        mask = torch.cat([self._mask, torch.ones((len(tokens), 1), dtype=self._mask.dtype)], dim=1)
        adapters = [name for member in self._members for name in member.comparison.row_adapters(member.active)]
        with self.owner:
            out = forward_rows(model, adapters, input_ids=tokens[:, None].to(self.device),
                               attention_mask=mask.to(self.device), position_ids=self._positions[:, None].to(self.device),
                               cache=self._cache, use_cache=True)
        self._mask, self._positions = mask, self._positions + 1
        self._logits = out.logits[:, -1, :].float().cpu()
        self._record()

    def _stopped(self, comparison: DecodeRun, message: str) -> None:
        """A run the loop stopped: its memory goes back to the device, then it ends with ``message``."""
        if not self._members:
            self._reset()
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()
        self._record()
        self._commit()
        log.warning("a run stopped: %s", message)
        comparison.publish(done=True, error=RunStopped(message))

    def _select(self, keep: list[int]) -> None:
        """Keep only the batch rows ``keep``; drop cached positions that no remaining row attends."""
        if not keep:
            self._reset()
            return
        keep_cache_rows(self._cache, torch.tensor(keep, device=self.device))
        self._mask, self._positions, self._logits = self._mask[keep], self._positions[keep], self._logits[keep]
        first = int(self._mask.any(0).int().argmax())  # leading positions that are padding in every row
        if first and self._merge:
            self._mask = self._mask[:, first:]
            drop_cache_positions(self._cache, first)
        self._record()

    def _reset(self) -> None:
        self._cache = self._mask = self._positions = self._logits = None
        self._release_kernels()
        self._record()
        self._commit()

    def _release_kernels(self) -> None:
        if self.kernels is not None:
            with self.owner:
                self.kernels.__exit__(None, None, None)
            self.kernels = None


_loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_loops_lock = threading.Lock()


def decode_loop(bundle, kv_budget_mb: float | None = None) -> DecodeLoop:
    """The decode loop of ``bundle``'s model, created on first use; ``kv_budget_mb`` sets the KV budget of its
    device, which the loops of every model on that device share (see :func:`kv_budget_bytes` for the default,
    taken when the device's first loop is created; on a GPU it is measured again as each model's loop is created,
    after that model loaded: what the caches hold now counts as part of it)."""
    with _loops_lock:
        loop = _loops.get(bundle.model)
        created = loop is None
        if created:
            loop = _loops[bundle.model] = DecodeLoop(bundle.model, bundle.device, owner=bundle.owner)
    budget = loop.budget
    if kv_budget_mb is not None or (created and (not budget.total or torch.device(bundle.device).type == "cuda")):
        total = kv_budget_bytes(bundle.device, kv_budget_mb)
        if kv_budget_mb is None and torch.device(bundle.device).type == "cuda":
            total += budget.in_use()  # memory the caches hold is not free now, but it is the budget's
        budget.total = total
    return loop


@contextlib.contextmanager
def paused(model: torch.nn.Module):
    """:meth:`DecodeLoop.paused` on ``model``'s decode loop, if it has one."""
    with _loops_lock:
        loop = _loops.get(model)
    with loop.paused() if loop is not None else contextlib.nullcontext():
        yield


def shutdown(message: str = SHUTTING_DOWN, timeout: float = 30.0) -> None:
    """Close every decode loop (its runs end with ``message``, its thread ends and is joined), then hold every
    model's owner for good: a forward pass in progress elsewhere (the doctor's) finishes, and none starts after.
    app.py calls it on SIGINT and SIGTERM; it also runs at exit, before the interpreter tears down: a thread still
    computing in torch then would abort the process ("terminate called without an active exception")."""
    with _loops_lock:
        loops = list(_loops.values())
    for loop in loops:
        loop.close(message, timeout)
    # A loop's thread that ended on its own (idle) may still be dropping the last reference to a model no one else
    # holds (a loop leaves _loops with its model): freeing its tensors after the interpreter began to tear down
    # aborts the same way. Wait for those threads too.
    for thread in threading.enumerate():
        if thread.name == LOOP_THREAD and thread is not threading.current_thread():
            thread.join(timeout)
    for loop in loops:
        loop.owner.acquire(timeout=timeout)


atexit.register(shutdown)
