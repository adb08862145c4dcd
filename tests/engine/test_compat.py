"""Every wrapper of playground.compat on the real embedded model: a transformers upgrade that removes or changes one
of the private calls fails here with a sentence naming the call, not somewhere inside a run."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from playground.compat import (
    WRITTEN_AGAINST,
    PrivateAPIChanged,
    append_cache_rows,
    cache_rows,
    config_logits_processors,
    drop_cache_positions,
    keep_cache_rows,
    mergeable_cache,
    stitch_cache_rows,
    trim_cache,
)

PROMPTS = ["The capital of France is", "Name three colours:"]


def changed(call: str) -> str:
    """The sentence a failing check says."""
    return (f"transformers {transformers.__version__}: the private {call} no longer does what playground/compat.py "
            f"expects (written against transformers {WRITTEN_AGAINST})")


def prefill(model, tokenizer, prompts: list[str]):
    """The prompts through the model as the decode loop runs them: left-padded, explicit positions.
    Returns (cache, mask, next positions, last logits)."""
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return out.cache, mask, positions[:, -1] + 1, out.logits[:, -1, :]


def step(model, cache, mask, positions, tokens):
    """One forward pass of one token per row from ``cache``: (the next logits, the grown cache)."""
    mask = torch.cat([mask, torch.ones((len(tokens), 1), dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None], cache=cache,
                    use_cache=True)
    return out.logits[:, -1, :], out.cache


def states(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


@pytest.fixture(scope="module")
def model(smollm):
    return smollm.model


def test_the_generation_configs_processors_are_the_ones_generate_applies(smollm):
    config = copy.deepcopy(smollm.model.generation_config)
    config.update(do_sample=False, max_new_tokens=4, repetition_penalty=1.3, no_repeat_ngram_size=2)
    ids = smollm.tokenizer("Say it again and again and again:", return_tensors="pt")["input_ids"]
    config.max_length = ids.shape[1] + 4
    try:
        processors = config_logits_processors(smollm.model, config, ids.shape[1])
    except PrivateAPIChanged as error:
        pytest.fail(str(error))
    kinds = {type(p) for p in processors}
    assert {RepetitionPenaltyLogitsProcessor, NoRepeatNGramLogitsProcessor} <= kinds, \
        changed("GenerationMixin._get_logits_processor") + f": it built {sorted(k.__name__ for k in kinds)}"
    with torch.no_grad():
        raw = smollm.model(ids).logits[:, -1, :].float()
        out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=copy.deepcopy(config),
                                    output_scores=True, return_dict_in_generate=True)
    assert torch.allclose(processors(ids, raw), out.scores[0], atol=1e-4), \
        changed("GenerationMixin._get_logits_processor") + ": its processors score unlike generate()'s"


def test_a_forward_pass_gives_a_cache_the_decode_loop_can_merge(smollm, model):
    cache, *_ = prefill(model, smollm.tokenizer, PROMPTS[:1])
    assert mergeable_cache(cache), changed("transformers.cache_utils.DynamicLayer") + f": the cache is {cache!r}"
    assert not mergeable_cache(object())


def test_rows_of_a_cache_decode_as_they_do_in_the_batch_and_stitch_back(smollm, model):
    cache, mask, positions, logits = prefill(model, smollm.tokenizer, PROMPTS)
    before = states(cache)
    tokens = logits.argmax(-1)
    expected_logits, expected = step(model, copy.deepcopy(cache), mask, positions, tokens)
    parts = []
    for row in (0, 1):
        index = torch.tensor([row])
        rows = cache_rows(cache, index)
        row_logits, grown = step(model, rows, mask[index], positions[index], tokens[index])
        assert torch.allclose(row_logits, expected_logits[index], atol=1e-4), \
            changed("DynamicCache.layers") + ": a cache of some rows decodes unlike those rows in the batch"
        parts.append((index, grown))
    assert all(torch.equal(k, layer.keys) and torch.equal(v, layer.values) for (k, v), layer in zip(before, cache.layers)), \
        changed("DynamicLayer.keys/.values") + ": taking rows changed the batch's cache"
    stitch_cache_rows(cache, parts, 2)
    for layer, reference in zip(cache.layers, expected.layers):
        assert torch.allclose(layer.keys, reference.keys, atol=1e-4) and torch.allclose(layer.values, reference.values, atol=1e-4), \
            changed("DynamicLayer.keys/.values") + ": the stitched rows are not the batch's"


def test_appended_rows_decode_as_they_do_alone_and_a_failed_append_is_undone(smollm, model):
    short, short_mask, short_positions, short_logits = prefill(model, smollm.tokenizer, PROMPTS[1:])
    long, long_mask, long_positions, long_logits = prefill(model, smollm.tokenizer, PROMPTS[:1])
    alone = states(short)
    pad = long_mask.shape[1] - short_mask.shape[1]
    assert pad > 0
    append_cache_rows(short, long, pad, 0)
    assert [tuple(layer.keys.shape[:1] + layer.keys.shape[2:3]) for layer in short.layers] == \
        [(2, long_mask.shape[1])] * len(alone), changed("DynamicLayer.keys") + ": the appended cache has another shape"
    merged = copy.deepcopy(short)
    mask = torch.cat([torch.nn.functional.pad(short_mask, (pad, 0)), long_mask])
    tokens = torch.cat([short_logits.argmax(-1), long_logits.argmax(-1)])
    logits, _ = step(model, short, mask, torch.cat([short_positions, long_positions]), tokens)
    alone_logits, _ = step(model, prefill(model, smollm.tokenizer, PROMPTS[1:])[0], short_mask, short_positions, tokens[:1])
    assert torch.allclose(logits[:1], alone_logits, atol=1e-3), \
        changed("DynamicLayer.keys/.values") + ": a left-padded, appended row decodes unlike itself alone"

    trim_cache(merged, 1, short_mask.shape[1], slice(pad, None))  # after a failed merge: the first rows, unpadded
    assert all(torch.equal(layer.keys, k) and torch.equal(layer.values, v) for (k, v), layer in zip(alone, merged.layers)), \
        changed("DynamicLayer.keys/.values") + ": trimming did not give back the batch as it was"


def test_kept_rows_and_dropped_positions_are_what_is_left_of_the_cache(smollm, model):
    cache, mask, *_ = prefill(model, smollm.tokenizer, PROMPTS)
    before = states(cache)
    keep_cache_rows(cache, torch.tensor([1]))
    assert all(torch.equal(layer.keys, k[1:]) and torch.equal(layer.values, v[1:]) for (k, v), layer in zip(before, cache.layers)), \
        changed("Cache.reorder_cache") + ": the rows kept are not the ones asked for"
    drop_cache_positions(cache, 2)
    assert all(torch.equal(layer.keys, k[1:, :, 2:]) and torch.equal(layer.values, v[1:, :, 2:])
               for (k, v), layer in zip(before, cache.layers)), \
        changed("DynamicLayer.keys/.values") + ": dropping leading positions kept others"
    assert cache.get_seq_length() == mask.shape[1] - 2, changed("DynamicCache.layers") + ": the cache's length disagrees"


def test_a_row_kept_twice_is_two_rows_that_decode_alike(smollm, model):
    """A prompt prefilled once for two columns: its cache row, repeated, gives both rows the next step's logits
    of the row it was copied from, and the copies are rows of their own."""
    cache, mask, positions, _ = prefill(model, smollm.tokenizer, PROMPTS)
    before = states(cache)
    keep_cache_rows(cache, torch.tensor([1, 1, 0]))
    assert all(torch.equal(layer.keys, k[[1, 1, 0]]) for (k, _), layer in zip(before, cache.layers)), \
        changed("Cache.reorder_cache") + ": repeated rows are not copies of the row asked for"
    assert cache.layers[0].keys[0].data_ptr() != cache.layers[0].keys[1].data_ptr()
    logits, _ = step(model, cache, mask[[1, 1, 0]], positions[[1, 1, 0]], torch.tensor([42, 42, 42]))
    assert torch.allclose(logits[0], logits[1], atol=1e-5) and not torch.allclose(logits[0], logits[2], atol=1e-2)
