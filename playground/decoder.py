"""One owner per model: a decode loop that runs every active row of every comparison in one batch.

A :class:`~playground.engine.Comparison` submits its rows; the loop's thread does one forward pass per step for
all of them and hands each comparison its rows' logits (the comparison chooses, records and says which rows go
on). Finished rows leave the batch and its KV cache; waiting rows join between steps: their prompts are prefilled
on their own, then their KV cache is merged into the batch's (the shorter side left-padded, the attention masks
extended). Positions are explicit, so the pads are never attended and never shift a row's positions: a row
decodes the same tokens whatever shares its batch. Decoding never waits on a consumer: a comparison's reader
picks up whatever steps were added since it last looked.

    >>> loop = decode_loop(bundle)   # doctest: +SKIP  (created on first use; its thread ends when idle)
    >>> comparison.submit()          # doctest: +SKIP  (what Comparison.run() does first)
    >>> loop.drain()                 # doctest: +SKIP  (e.g. before loading another model: rows in flight finish)
"""

from __future__ import annotations

import collections
import contextlib
import copy
import threading
import types
import weakref

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .models import PEFT_BASE, can_mix

IDLE_SECONDS = 2.0  # an idle loop's thread ends after this; the next submit starts another
MAX_ROWS = 64  # rows decoding at once; more wait and join as rows finish


def _decode_linear_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2 or x.shape[-2] != 1:  # prefill (several positions per row): the usual path
        return torch.nn.functional.linear(x, self.weight, self.bias)
    rows = x.reshape(-1, x.shape[-1])
    out = torch.mm(self.weight, rows.T).T
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], -1)


@contextlib.contextmanager
def _weight_stationary_decode(model: torch.nn.Module):
    """Multiply decode-step activations as W @ xᵀ instead of x @ Wᵀ while rows decode on ``model``.

    On CPU, MKL's x @ Wᵀ for a few rows runs at half the speed of W @ xᵀ for the same numbers (measured on the
    embedded model: a 2-row decode step 62 ms → 33 ms, faster than one row's 38 ms), which is what makes
    decoding several columns together cheaper than decoding them one by one. For one row the result is
    bit-identical, so a single column still matches ``generate()`` exactly; prefill keeps the usual path.
    GPUs and quantized layers keep their own kernels. The loop holds it while its batch has rows, so a plain
    ``generate()`` on an idle model runs unpatched.
    """
    for module in model.modules():
        if (type(module) is torch.nn.Linear and module.weight.device.type == "cpu"
                and module.weight.dtype == torch.float32 and "forward" not in module.__dict__):
            module.forward = types.MethodType(_decode_linear_forward, module)
    try:
        yield
    finally:
        for module in model.modules():
            if getattr(module.__dict__.get("forward"), "__func__", None) is _decode_linear_forward:
                del module.forward


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """Pad a [batch, heads, length, dim] cache tensor with ``width`` zero positions on the left."""
    return torch.nn.functional.pad(states, (0, 0, width, 0)) if width else states


def _mergeable(cache) -> bool:
    """Only plain growing caches can be padded and concatenated; sliding, static or quantized ones cannot."""
    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)


def _forward(model, adapters: list[str], **inputs):
    """One forward pass of the batch whose rows use the PEFT adapters ``adapters`` (one name per row, "__base__"
    for the base model). Rows of plain LoRA adapters share the pass (PEFT's mixed adapter batch: the base layers
    run once for every row, each adapter's update on its own rows); adapters PEFT cannot mix take turns."""
    if not hasattr(model, "peft_config") or (len(set(adapters)) == 1 and adapters[0] == model.active_adapter):
        return model(**inputs)
    if all(can_mix(model, name) for name in set(adapters)):
        return model(**inputs, adapter_names=adapters)
    return _take_turns(model, adapters, **inputs)


@contextlib.contextmanager
def _using(model, adapter: str):
    """``model`` running only ``adapter`` (a PEFT name), for a forward pass without ``adapter_names``."""
    if adapter == PEFT_BASE:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(adapter)
    try:
        yield
    finally:
        model.set_adapter(previous)


def _take_turns(model, adapters: list[str], *, input_ids, attention_mask, position_ids, past_key_values=None,
                **inputs):
    """The batch's forward pass as one pass per adapter on its own rows (their slice of the cache), stitched
    back together in batch order: what rows of an adapter PEFT cannot mix (DoRA) pay instead of sharing."""
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(adapters):
        groups.setdefault(name, []).append(row)
    outputs = []
    for name, rows in groups.items():
        index = torch.tensor(rows, device=input_ids.device)
        cache = None
        if past_key_values is not None:  # the group's rows of the batch cache, as a cache of their own
            cache = copy.copy(past_key_values)
            cache.layers = [copy.copy(layer) for layer in past_key_values.layers]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        with _using(model, name):
            out = model(input_ids=input_ids[index], attention_mask=attention_mask[index],
                        position_ids=position_ids[index], past_key_values=cache, **inputs)
        outputs.append((index, out))
    first = outputs[0][1]
    logits = first.logits.new_empty((len(adapters), *first.logits.shape[1:]))
    cache = past_key_values if past_key_values is not None else first.past_key_values
    for layer_index, layer in enumerate(cache.layers):
        keys = outputs[0][1].past_key_values.layers[layer_index].keys
        values = outputs[0][1].past_key_values.layers[layer_index].values
        all_keys = keys.new_empty((len(adapters), *keys.shape[1:]))
        all_values = values.new_empty((len(adapters), *values.shape[1:]))
        for index, out in outputs:
            all_keys[index] = out.past_key_values.layers[layer_index].keys
            all_values[index] = out.past_key_values.layers[layer_index].values
        layer.keys, layer.values = all_keys, all_values
    for index, out in outputs:
        logits[index] = out.logits
    return types.SimpleNamespace(logits=logits, past_key_values=cache)


class _Member:
    """A comparison in the batch: its rows still decoding (original row indices, in batch order)."""

    def __init__(self, comparison, active: list[int]):
        self.comparison, self.active = comparison, active
        self.error: BaseException | None = None


class DecodeLoop:
    """The batch of rows decoding on one model, stepped by one daemon thread. Get it with :func:`decode_loop`."""

    def __init__(self, model: torch.nn.Module, device, max_rows: int = MAX_ROWS):
        self._model = weakref.ref(model)  # the thread holds the model while it runs; an idle loop does not
        self.device, self.max_rows = device, max_rows
        self._cv = threading.Condition()
        self._waiting: collections.deque = collections.deque()  # submitted comparisons not yet in the batch
        self._members: list[_Member] = []  # in batch order; each member's rows are contiguous
        self._thread: threading.Thread | None = None
        self._merge = True  # False once a prefill returns a cache that cannot be merged: one comparison at a time
        # The batch, touched by the loop thread only: KV cache, attention mask (rows × cached positions, on the
        # CPU), each row's next position and the logits its next token is chosen from.
        self._cache = self._mask = self._positions = self._logits = None
        self._patch = contextlib.ExitStack()

    def submit(self, comparison) -> None:
        """Queue a comparison's rows; they join the batch before the next step (room permitting)."""
        with self._cv:
            self._waiting.append(comparison)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="decode-loop", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    @property
    def rows_in_flight(self) -> int:
        """Rows decoding or waiting to join."""
        with self._cv:
            return sum(len(m.active) for m in self._members) + sum(len(c._rows) for c in self._waiting)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no row is decoding or waiting (e.g. before loading another model); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._waiting and not self._members, timeout)

    # -- the loop thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        model = self._model()
        with torch.inference_mode():
            while True:
                with self._cv:
                    if not self._waiting and not self._members:
                        self._cv.notify_all()  # wake drain()
                        if model is None or not self._cv.wait_for(lambda: self._waiting, IDLE_SECONDS):
                            self._thread = None
                            return
                    joining, dropped = self._take_waiting()
                for comparison in dropped:  # cancelled before it joined
                    comparison._publish(done=True)
                try:
                    for comparison in joining:
                        self._join(model, comparison)
                    if self._members:
                        self._step(model)
                except Exception as error:  # a failed forward pass fails every row in the batch
                    with self._cv:
                        members, self._members = self._members, []
                    self._reset()
                    for comparison in {*(m.comparison for m in members), *joining}:
                        if not comparison.done:
                            comparison._publish(done=True, error=error)

    def _take_waiting(self) -> tuple[list, list]:
        """(comparisons that join now, cancelled ones that never will); called holding the lock."""
        rows = sum(len(m.active) for m in self._members)
        dropped = [c for c in self._waiting if c._cancel.is_set()]
        if dropped:
            self._waiting = collections.deque(c for c in self._waiting if not c._cancel.is_set())
        joining = []
        while self._waiting:
            comparison = self._waiting[0]
            size = len(comparison._rows)
            if (rows or joining) and (not self._merge or rows + size > self.max_rows):
                break  # a comparison wider than max_rows joins an empty batch
            joining.append(self._waiting.popleft())
            rows += size
        return joining, dropped

    def _join(self, model, comparison) -> None:
        """Prefill the comparison's prompts on their own, then merge their cache into the batch's."""
        if not self._members:
            self._patch.enter_context(_weight_stationary_decode(model))
        try:
            ids, mask = comparison._begin()
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # logits_to_keep=1: only the last position's logits, as generate() computes them
            out = _forward(model, comparison.row_adapters(range(len(comparison._rows))), input_ids=ids.to(self.device),
                           attention_mask=mask.to(self.device), position_ids=positions.to(self.device), use_cache=True,
                           logits_to_keep=1)
        except Exception as error:  # this comparison fails; the batch goes on
            if not self._members:
                self._patch.close()
            comparison._publish(done=True, error=error)
            return
        cache, logits, positions = out.past_key_values, out.logits[:, -1, :].float().cpu(), positions[:, -1] + 1
        if self._members and not _mergeable(cache):  # learnt on this model's first prefill: one run at a time
            self._merge = False
            with self._cv:
                self._waiting.appendleft(comparison)  # prefilled again once the batch is empty
            return
        if not self._members:
            self._cache, self._mask, self._positions, self._logits = cache, mask, positions, logits
            self._merge = self._merge and _mergeable(cache)
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            old, new = width - self._mask.shape[1], width - mask.shape[1]
            for batch_layer, layer in zip(self._cache.layers, cache.layers):
                batch_layer.keys = torch.cat([_left_pad(batch_layer.keys, old), _left_pad(layer.keys, new)])
                batch_layer.values = torch.cat([_left_pad(batch_layer.values, old), _left_pad(layer.values, new)])
            pad = torch.nn.functional.pad
            self._mask = torch.cat([pad(self._mask, (old, 0)), pad(mask, (new, 0))])
            self._positions = torch.cat([self._positions, positions])
            self._logits = torch.cat([self._logits, logits])
        with self._cv:
            self._members = [*self._members, _Member(comparison, list(range(len(comparison._rows))))]

    def _step(self, model) -> None:
        """Every comparison takes its step on its rows' logits; finished rows leave; one forward pass for the rest."""
        offset, keep, tokens, staying, leaving = 0, [], [], [], []
        for member in self._members:
            size = len(member.active)
            try:
                with member.comparison.lock:
                    chosen, still = member.comparison._step(self._logits[offset:offset + size], member.active)
            except Exception as error:  # a failing processor fails its own comparison only
                member.error, still = error, []
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
        for member in staying:
            member.comparison._publish()
        for member in leaving:
            member.comparison._publish(done=True, error=member.error)
        if not staying:
            return
        tokens = torch.cat(tokens)
        self._mask = torch.cat([self._mask, torch.ones((len(tokens), 1), dtype=self._mask.dtype)], dim=1)
        adapters = [name for member in staying for name in member.comparison.row_adapters(member.active)]
        out = _forward(model, adapters, input_ids=tokens[:, None].to(self.device),
                       attention_mask=self._mask.to(self.device), position_ids=self._positions[:, None].to(self.device),
                       past_key_values=self._cache, use_cache=True)
        self._positions = self._positions + 1
        self._logits = out.logits[:, -1, :].float().cpu()

    def _select(self, keep: list[int]) -> None:
        """Keep only the batch rows ``keep``; drop cached positions that no remaining row attends."""
        if not keep:
            self._reset()
            return
        self._cache.batch_select_indices(torch.tensor(keep, device=self.device))
        self._mask, self._positions, self._logits = self._mask[keep], self._positions[keep], self._logits[keep]
        first = int(self._mask.any(0).int().argmax())  # leading positions that are padding in every row
        if first and self._merge:
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def _reset(self) -> None:
        self._cache = self._mask = self._positions = self._logits = None
        self._patch.close()


_loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_loops_lock = threading.Lock()


def decode_loop(bundle) -> DecodeLoop:
    """The decode loop of ``bundle``'s model, created on first use."""
    with _loops_lock:
        loop = _loops.get(bundle.model)
        if loop is None:
            loop = _loops[bundle.model] = DecodeLoop(bundle.model, bundle.device)
        return loop
