"""Decode-step kernels chosen by measurement: whichever candidate is in use, one column decodes exactly what
generate() decodes (greedy and sampled) and rows decoded together decode what each decodes alone; the choice
is measured once per CPU, thread count and batch size, cached, and said in /info."""

from __future__ import annotations

import pytest
import torch

from playground import kernels, openmp
from playground.engine import Settings, Variant, compare
from playground.prompts import encode_prompt

PARIS = "What can I do in Paris?"


def generate_tokens(bundle, n: int, **sampling) -> list[int]:
    ids = torch.tensor([encode_prompt(bundle.tokenizer, PARIS)])
    if sampling:
        torch.manual_seed(sampling.pop("seed"))
    out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, top_k=0,
                                do_sample=bool(sampling), pad_token_id=bundle.tokenizer.pad_token_id, **sampling)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("kernel", sorted(kernels.CANDIDATES))
def test_one_column_equals_generate_and_two_rows_equal_each_alone_whichever_kernel(smollm, kernel):
    n = 16
    sampled = dict(temperature=0.7, top_p=0.9, seed=5)
    with kernels.forced(kernel):
        greedy = compare(smollm, PARIS, [Variant("a")], Settings(max_new_tokens=n)).variants[0]
        drawn = compare(smollm, PARIS, [Variant("a")], Settings(max_new_tokens=n, **sampled)).variants[0]
        pair = compare(smollm, PARIS, [Variant("a"), Variant("b", ["concise_suffix"])], Settings(max_new_tokens=n))
        alone = compare(smollm, PARIS, [Variant("b", ["concise_suffix"])], Settings(max_new_tokens=n)).variants[0]
    assert greedy.token_ids == generate_tokens(smollm, n)
    assert drawn.token_ids == generate_tokens(smollm, n, **sampled)
    assert pair.variants[0].token_ids == greedy.token_ids
    assert pair.variants[1].token_ids == alone.token_ids


def test_info_says_which_kernels_the_model_decodes_with(smollm):
    from playground.service import Playground

    compare(smollm, PARIS, [Variant("a"), Variant("b", ["eos_reward"])], Settings(max_new_tokens=2))
    described = Playground(smollm).info()["decode_kernels"]
    assert described["cpu"] == kernels.cpu_name() and described["torch_threads"] == torch.get_num_threads()
    assert set(described["choices"]["2"]) >= {"576x576", "49152x576"}  # the model's linear shapes, 2 rows measured
    assert set(described["choices"]["2"].values()) <= set(kernels.CANDIDATES)


def test_the_loop_keeps_its_threads_awake_after_its_caller_ran_torch_on_two_threads(smollm):
    """GNU OpenMP puts idle worker threads to sleep after every parallel region once the process has more of them
    than CPUs. The caller's own team (left by its generate()) did that to the decode loop: ~900 sleeps a step, and
    base + adapter in one batch cost more than two generate() calls. The caller now hands its team back."""
    import os
    import resource

    if not openmp.release_thread_team() or (os.cpu_count() or 1) < 2:
        pytest.skip("needs GNU OpenMP and 2 CPUs")
    steps, previous = 24, torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generate_tokens(smollm, 4)  # this thread's team of 2, as a script's generate() leaves it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        compare(smollm, PARIS, [Variant("a"), Variant("b", ["eos_reward"])], Settings(max_new_tokens=steps))
        sleeps = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
    finally:
        torch.set_num_threads(previous)
    assert sleeps < 60 * steps, f"{sleeps} voluntary context switches for {steps} steps"
