"""transformers' private API, in one module: every call the playground makes into transformers internals.

Written against transformers 5.24.0 (:data:`WRITTEN_AGAINST`). Two things have no public API there:

* the processors ``generate()`` adds on its own from a model's generation config (repetition penalty, suppressed
  tokens, no-repeat n-grams, ...): ``GenerationMixin._prepare_special_tokens`` and ``._get_logits_processor``
  build them, and the engine must apply the very same ones for a column to decode as the user's ``generate()``;
* the decode loop's batch of rows that join and leave between steps: it pads, concatenates, slices and stitches
  the key/value tensors of a ``DynamicCache``'s layers (``cache.layers``, ``DynamicLayer.keys`` / ``.values``,
  ``reorder_cache``), which transformers treats as its own business.

Each wrapper makes its private calls inside :func:`_private`, so a transformers upgrade that renames or reshapes
one fails with :class:`PrivateAPIChanged`, a sentence naming the call, rather than a bare AttributeError deep in a
run; ``tests/engine/test_compat.py`` exercises every wrapper on the real embedded model.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import transformers
from transformers import DynamicCache, LogitsProcessorList

WRITTEN_AGAINST = "5.24.0"


class PrivateAPIChanged(RuntimeError):
    """A private transformers call the playground relies on is gone or has another shape in this version."""


@contextlib.contextmanager
def _private(call: str):
    """Run a private transformers call; an error meaning its shape changed becomes a sentence naming it."""
    try:
        yield
    except (AttributeError, TypeError, ImportError) as error:
        raise PrivateAPIChanged(
            f"transformers {transformers.__version__} changed its private {call} ({type(error).__name__}: {error}); "
            f"playground/compat.py was written against transformers {WRITTEN_AGAINST}") from error


# -- the generation config's own processors ----------------------------------------------------------------


def config_logits_processors(model, config, prompt_length: int) -> LogitsProcessorList:
    """The logits processors ``model.generate()`` builds from the generation ``config`` (whose ``max_length`` the
    caller has set) for a prompt of ``prompt_length`` tokens, on the CPU: the same helpers ``generate()`` calls,
    since transformers has no public way to get them."""
    with _private("GenerationMixin._prepare_special_tokens"):
        model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device="cpu")
    with _private("GenerationMixin._get_logits_processor"):
        return model._get_logits_processor(config, input_ids_seq_length=prompt_length, encoder_input_ids=None,
                                           logits_processor=LogitsProcessorList(), device="cpu", model_kwargs={})


# -- the decode loop's KV cache ----------------------------------------------------------------------------


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """Pad a [batch, heads, length, dim] cache tensor with ``width`` zero positions on the left."""
    return torch.nn.functional.pad(states, (0, 0, width, 0)) if width else states


def mergeable_cache(cache) -> bool:
    """Whether the decode loop may pad, concatenate and slice ``cache``'s rows: only a plain growing cache
    (a ``DynamicCache`` of ``DynamicLayer`` layers); sliding, static or quantized ones keep positions elsewhere."""
    with _private("transformers.cache_utils.DynamicLayer and DynamicCache.layers"):
        from transformers.cache_utils import DynamicLayer

        return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)


def cache_rows(cache, index: torch.Tensor):
    """A cache of its own holding the rows ``index`` of ``cache`` (which is left as it was): what a forward pass
    over only those rows continues from."""
    with _private("DynamicCache.layers / DynamicLayer.keys and .values"):
        rows = copy.copy(cache)
        rows.layers = [copy.copy(layer) for layer in cache.layers]
        for layer in rows.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        return rows


def stitch_cache_rows(cache, parts: list[tuple[torch.Tensor, object]], rows: int) -> None:
    """Set every layer of ``cache`` to ``rows`` rows taken from ``parts``: (row indices, the cache a forward pass
    over those rows returned); the parts' caches must hold the same positions."""
    with _private("DynamicCache.layers / DynamicLayer.keys and .values"):
        for number, layer in enumerate(cache.layers):
            first = parts[0][1].layers[number]
            keys = first.keys.new_empty((rows, *first.keys.shape[1:]))
            values = first.values.new_empty((rows, *first.values.shape[1:]))
            for index, part in parts:
                keys[index] = part.layers[number].keys
                values[index] = part.layers[number].values
            layer.keys, layer.values = keys, values


def append_cache_rows(cache, new, cache_pad: int, new_pad: int) -> None:
    """Append ``new``'s rows to ``cache``'s, each side left-padded (``cache_pad`` and ``new_pad`` positions) to
    one width. A failure (out of memory) leaves the layers merged so far grown: :func:`trim_cache` undoes them."""
    with _private("DynamicCache.layers / DynamicLayer.keys and .values"):
        for layer, added in zip(cache.layers, new.layers):
            layer.keys = torch.cat([_left_pad(layer.keys, cache_pad), _left_pad(added.keys, new_pad)])
            layer.values = torch.cat([_left_pad(layer.values, cache_pad), _left_pad(added.values, new_pad)])


def trim_cache(cache, rows: int, width: int, positions: slice) -> None:
    """After a failed merge or forward pass: every layer that no longer holds ``rows`` × ``width`` goes back to
    its first ``rows`` rows and the ``positions`` that were the batch's."""
    with _private("DynamicCache.layers / DynamicLayer.keys and .values"):
        for layer in cache.layers:
            for name in ("keys", "values"):
                states = getattr(layer, name)
                if states.shape[0] != rows or states.shape[-2] != width:
                    setattr(layer, name, states[:rows, :, positions, :])


def keep_cache_rows(cache, index: torch.Tensor) -> None:
    """Make ``cache``'s rows its rows ``index``, in that order; an index may repeat (a prompt prefilled once for
    several rows). Beam search's reordering: every kind of cache layer has it, convolution and recurrent states
    included (``batch_select_indices`` is missing from linear-attention layers)."""
    with _private("Cache.reorder_cache"):
        cache.reorder_cache(index)


def drop_cache_positions(cache, count: int) -> None:
    """Drop the first ``count`` cached positions of every row (padding no row attends any more)."""
    with _private("DynamicCache.layers / DynamicLayer.keys and .values"):
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[..., count:, :], layer.values[..., count:, :]
