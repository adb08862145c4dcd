"""The engine against plain ``generate()`` (greedy and sampled, 1 and 2 torch threads), the decode loop's per-step
CPU work, and base + a LoRA adapter in one run against two ``generate()`` calls."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .common import EQUAL_LENGTH_COLUMNS, RAMBLING_PROMPT, _one_thread, _timed

SAMPLED = {"temperature": 0.7, "top_p": 0.9}  # the sampled half of the engine ratios


WARM_UP_TOKENS = 8  # enough for first-call costs (allocations, a batch size's kernels measured once per CPU)


def bench_engine(bundle, new_tokens: int = 64, rounds: int = 2, sampling: dict | None = None,
                 threads: int | None = None) -> dict:
    """(a) baseline + 1 variant in one engine run vs two sequential generate() calls; (b) 1 variant with full
    telemetry vs one generate() call. Greedy, or sampled with ``sampling`` (generate() with the same settings and
    seed); with ``threads`` torch threads. Best of ``rounds``, interleaved so both sides see the same machine."""
    from playground.decoder import decode_loop
    from playground.engine import Settings, Variant, compare
    from playground.kernels import DecodeKernels
    from playground.prompts import encode_prompt

    prompt = RAMBLING_PROMPT
    ids = torch.tensor([encode_prompt(bundle.tokenizer, prompt)])
    eos = bundle.info.eos_token_ids
    sampling = dict(sampling or {})

    def plain_generate(tokens: int = new_tokens):
        if sampling:
            torch.manual_seed(0)
        out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                    min_new_tokens=tokens, do_sample=bool(sampling),
                                    **({"top_k": 0, **sampling} if sampling else {}),  # top_k=0: no default top-k 50
                                    eos_token_id=eos, pad_token_id=bundle.tokenizer.pad_token_id)
        assert out.shape[1] - ids.shape[1] == tokens

    pair = [Variant(name, interventions) for name, interventions in EQUAL_LENGTH_COLUMNS]
    single = pair[1:]

    def engine(variants, tokens: int = new_tokens):
        trace = compare(bundle, prompt, variants, Settings(max_new_tokens=tokens, **sampling))
        assert all(len(v.token_ids) == tokens for v in trace.variants)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        # Warm-up; the engine's first runs measure its kernels for 1 and 2 rows if not cached.
        plain_generate(WARM_UP_TOKENS)
        engine(pair, WARM_UP_TOKENS)
        engine(single, WARM_UP_TOKENS)
        generates, pairs, singles = [], [], []
        for _ in range(rounds):
            generates.append(_timed(plain_generate))
            pairs.append(_timed(lambda: engine(pair)))
            singles.append(_timed(lambda: engine(single)))
        generate_s, pair_s, single_s = min(generates), min(pairs), min(singles)
        kernels = DecodeKernels(bundle.model).describe()
        decode_loop(bundle).drain()
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "new_tokens": new_tokens,
        "sampling": sampling or "greedy",
        "torch_threads": kernels["torch_threads"],
        "generate_tokens_per_s": round(new_tokens / generate_s, 2),
        "engine_pair_tokens_per_s": round(2 * new_tokens / pair_s, 2),
        "engine_single_tokens_per_s": round(new_tokens / single_s, 2),
        "pair_vs_two_generates": round(pair_s / (2 * generate_s), 3),  # target <= 0.60
        "pair_vs_two_generates_spread": spread([p / (2 * g) for p, g in zip(pairs, generates)]),
        "single_with_telemetry_vs_generate": round(single_s / generate_s, 3),  # target <= 1.05
        "decode_kernels": {rows: kernels["choices"].get(rows) for rows in ("1", "2")},
    }


def spread(ratios: list[float]) -> list[float]:
    """The lowest and highest of one ratio taken round by round (each round's two sides interleaved): how far
    one round can be from another on this machine now.

    >>> spread([0.52, 0.47, 0.5])
    [0.47, 0.52]
    """
    return [round(min(ratios), 3), round(max(ratios), 3)]


def bench_engines(bundle, new_tokens: int = 64, rounds: int = 2, samplings: tuple[str, ...] = ("greedy", "sampled")) -> dict:
    """The engine ratios greedy and sampled (or only those in ``samplings``), with 1 and 2 torch threads, and the
    CPU they were measured on."""
    from playground.kernels import cpu_name

    results = {"cpu": cpu_name()}
    for threads in (1, 2):
        for name, sampling in (("greedy", None), ("sampled", SAMPLED)):
            if name not in samplings:
                continue
            results[f"{name}_{threads}_threads"] = bench_engine(bundle, new_tokens, rounds, sampling, threads)
    return results


def bench_step_overhead(bundle, rows: int = 64, vocab_size: int = 32000, steps: int = 8) -> dict:
    """The loop's per-step CPU work (processors, sampling, top-k, telemetry) for ``rows`` rows — 8 runs of 8
    columns, half of them with the EOS ramp — on random logits of ``vocab_size``, greedy and sampled, beside one
    decode forward pass of the embedded model at ``rows`` rows; one torch thread. Median milliseconds per step,
    and the step's work as a fraction of that forward pass (an absolute figure means nothing across CPUs). Both
    are the CPU time of the measuring thread (torch runs on it with one thread), so other processes taking the
    cores move them less than they move wall time."""
    from playground.engine import Comparison, Settings, Variant
    from playground.kernels import DecodeKernels

    columns = [Variant(f"c{i}", ["ban_eos"] + (["eos_reward"] if i % 2 else [])) for i in range(8)]
    generator = torch.Generator().manual_seed(0)

    def per_step_ms(settings: Settings) -> tuple[float, float]:
        """Median milliseconds of a step's CPU work and, measured apart on the same logits, of its telemetry."""
        runs = [Comparison(bundle, RAMBLING_PROMPT, columns, settings) for _ in range(rows // len(columns))]
        for run in runs:
            run.begin()
        active = list(range(len(columns)))
        seconds, telemetry = [], []
        for _ in range(steps):
            logits = [torch.randn(len(columns), vocab_size, generator=generator) * 4 for _ in runs]
            started = time.thread_time()
            for run, raw in zip(runs, logits):
                run.step(raw, active)
            seconds.append(time.thread_time() - started)
            choices = [run.choose(raw, active) for run, raw in zip(runs, logits)]
            started = time.thread_time()
            for run, raw, choice in zip(runs, logits, choices):
                run.telemetry(raw, choice)
            telemetry.append(time.thread_time() - started)
        return sorted(seconds)[len(seconds) // 2] * 1e3, sorted(telemetry)[len(telemetry) // 2] * 1e3

    def forward_ms() -> float:
        from playground.prompts import encode_prompt

        ids = torch.tensor([encode_prompt(bundle.tokenizer, RAMBLING_PROMPT)] * rows)
        with torch.inference_mode(), DecodeKernels(bundle.model) as kernels:
            out = bundle.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            kernels.use(rows)
            seconds = []
            for _ in range(4):
                started = time.thread_time()
                out = bundle.model(input_ids=token, cache=cache, use_cache=True)
                seconds.append(time.thread_time() - started)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
        return sorted(seconds)[len(seconds) // 2] * 1e3

    greedy, greedy_telemetry = _one_thread(lambda: per_step_ms(Settings(max_new_tokens=steps + 1)))
    sampled, sampled_telemetry = _one_thread(lambda: per_step_ms(Settings(max_new_tokens=steps + 1, **SAMPLED)))
    forward = _one_thread(forward_ms)
    return {"rows": rows, "vocab_size": vocab_size, "torch_threads": 1,
            # the step's CPU work as a fraction of the forward pass it sits beside: targets <= 0.05 and <= 0.10
            "step_overhead_fraction_greedy": round(greedy / forward, 3),
            "step_overhead_fraction_sampled": round(sampled / forward, 3),
            "step_overhead_ms_greedy": round(greedy, 1),
            "step_overhead_ms_sampled": round(sampled, 1),
            "telemetry_ms_greedy": round(greedy_telemetry, 1),
            "telemetry_ms_sampled": round(sampled_telemetry, 1),
            # what telemetry adds to a whole step (forward pass + CPU work): target < 0.05
            "telemetry_fraction_of_step_greedy": round(greedy_telemetry / (forward + greedy), 3),
            "telemetry_fraction_of_step_sampled": round(sampled_telemetry / (forward + sampled), 3),
            "forward_ms_embedded_model": round(forward, 1)}


def bench_adapters(new_tokens: int = 64, rounds: int = 2) -> dict:
    """Base + a LoRA adapter as two columns of one engine run (PEFT's mixed adapter batch: one forward pass per step
    for both rows) vs two sequential ``generate()`` calls, one with the adapter switched off. The adapter (rank 8 on
    every linear layer, random non-zero weights: its speed does not depend on what it learnt) is saved and
    loaded the way ``--adapter`` loads one, on its own copy of the embedded model."""
    from peft import LoraConfig, get_peft_model

    from playground.engine import Settings, Variant, compare
    from playground.models import BASE, load_model
    from playground.prompts import encode_prompt

    bundle = load_model()
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as directory:
        torch.manual_seed(0)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(load_model().model, config, adapter_name="tuned").save_pretrained(directory)
        bundle.add_adapter("tuned", str(Path(directory) / "tuned"))  # PEFT saves a named adapter in its own folder
    ids = torch.tensor([encode_prompt(bundle.tokenizer, RAMBLING_PROMPT)])
    eos = bundle.info.eos_token_ids

    def two_generates(tokens: int = new_tokens):
        for model in (BASE, "tuned"):
            with bundle.using(model):
                out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                            min_new_tokens=tokens, do_sample=False, eos_token_id=eos,
                                            pad_token_id=bundle.tokenizer.pad_token_id)
            assert out.shape[1] - ids.shape[1] == tokens

    pair = [Variant(model, ["ban_eos"], model=model) for model in (BASE, "tuned")]

    def engine():
        trace = compare(bundle, RAMBLING_PROMPT, pair, Settings(max_new_tokens=new_tokens))
        assert all(len(v.token_ids) == new_tokens for v in trace.variants)

    two_generates(WARM_UP_TOKENS)
    results = {"new_tokens": new_tokens}
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):  # as the engine ratios: one and two torch threads
            torch.set_num_threads(threads)
            # The first decode of a batch size on a CPU measures its kernels, once (cached): not part of the ratio.
            compare(bundle, RAMBLING_PROMPT, pair, Settings(max_new_tokens=WARM_UP_TOKENS))
            generates, pairs = [], []
            for _ in range(rounds):
                generates.append(_timed(two_generates))
                pairs.append(_timed(engine))
            generate_s, pair_s = min(generates), min(pairs)
            results[f"{threads}_threads"] = {"two_generates_s": round(generate_s, 2), "engine_pair_s": round(pair_s, 2),
                                             "adapter_pair_vs_two_generates": round(pair_s / generate_s, 3),  # <= 0.75
                                             "adapter_pair_spread": spread([p / g for p, g in zip(pairs, generates)])}
    finally:
        torch.set_num_threads(previous)
    return results
