"""Benchmarks: ``python -m playground bench`` prints readable lines, then one JSON line of ratios.

Every ratio compares two things measured in the same run on the same machine, so it holds on a noisy machine
where absolute times do not.

``bench_engine`` decodes with the embedded model (EOS banned so every run has the same length) and compares the
side-by-side engine with plain ``generate()``, greedy and sampled, with 1 and 2 torch threads, naming the CPU and
the decode kernels measured fastest on it; ``bench_step_overhead`` times the loop's per-step CPU work for 64 rows
beside the forward pass; ``bench_ui`` serves the app in its own process and
measures what reaches its clients: a ``gradio_client`` consumer against the engine, the REST stream's bytes,
eight clients at once against one.

``bench_processors`` times one logits-processor call at a real vocabulary size: our ramp
(:class:`~playground.interventions.EosRewardLogitsProcessor`) against the article's literal
``EosTokenRewardLogitsProcessor``, measured in the same run. The article's code is not part of this project: it is
read from the source document (``../shared/seeds/001_*.txt`` next to the repository, or ``/work/shared/seeds``) and
executed at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SEED_DIRS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "seeds", Path("/work/shared/seeds"))
APP = Path(__file__).resolve().parents[1] / "app.py"
ARTICLE_CLASS = "EosTokenRewardLogitsProcessor"
RAMBLING_PROMPT = "What can I do in Paris?"
# Baseline and the ramp, both with EOS banned (a boost cannot undo a ban), so every run has the same length.
EQUAL_LENGTH_COLUMNS = (("baseline", ["ban_eos"]), ("eos_reward", ["ban_eos", "eos_reward"]))


def article_processor_class() -> tuple[type | None, str]:
    """The article's class, extracted from its source document and executed; (None, reason) when not found."""
    from transformers import LogitsProcessor

    for directory in SEED_DIRS:
        for document in sorted(directory.glob("001_*.txt")):
            for block in re.findall(r"```[a-z]*\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.S):
                if f"class {ARTICLE_CLASS}" in block:
                    namespace = {"torch": torch, "LogitsProcessor": LogitsProcessor}
                    exec(compile(block, str(document), "exec"), namespace)
                    return namespace[ARTICLE_CLASS], str(document.resolve())
    return None, "article document not found in " + " or ".join(str(d) for d in SEED_DIRS)


class _ListBuildingSeed:
    """Fallback when the article is absent: the same transform, built like the article with Python lists over the
    vocabulary (one list per pass instead of three, so the measured ratio is a lower bound)."""

    def __init__(self, eos_token_id: int, max_length: int):
        self.eos_token_id, self.max_length = eos_token_id, max_length

    def __call__(self, input_ids, scores):
        for ratio in (int(self.max_length * 0.8) / self.max_length, 1.0):
            others = [i for i in range(scores.shape[1]) if i != self.eos_token_id]
            selected = scores[:, others]
            scores[:, others] = selected * ratio * 10 * torch.exp(-torch.sign(selected))
            scores[:, self.eos_token_id] = 1e2 * ratio
        return scores


def _seconds_per_call(call, rounds: int, round_seconds: float = 0.05) -> float:
    """Best over ``rounds`` of the mean time per call, each round calling enough times to last ~round_seconds."""
    for _ in range(2):  # warm up: first calls allocate and move lookup tables
        started = time.perf_counter()
        call()
    number = max(1, int(round_seconds / max(time.perf_counter() - started, 1e-7)))
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def bench_processors(vocab_size: int = 49152, repeats: int = 5) -> dict:
    """Per-call cost of the EOS processors on one row of ``vocab_size`` logits (CPU, one thread), best of ``repeats`` rounds.

    Every processor is timed in the same process and run, so the speed-up ratios hold even on a busy machine.
    """
    from playground.interventions import EosRewardLogitsProcessor, SeedEosTokenRewardLogitsProcessor

    eos, max_new_tokens, prompt_length = 2, 300, 40
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(1, vocab_size, generator=generator) * 5
    # Step 280 of 300: inside the ramp, so the processors do their full work.
    input_ids = torch.randint(0, vocab_size, (1, prompt_length + 280), generator=generator)
    input_ids[0, -1] = 13  # any id; the boundary lookup costs the same either way

    article_class, source = article_processor_class()
    literal = (article_class or _ListBuildingSeed)(eos, max_new_tokens)
    vectorised_seed = SeedEosTokenRewardLogitsProcessor(eos, max_new_tokens)
    ramp = EosRewardLogitsProcessor(eos, max_new_tokens, prompt_length)
    ramp_at_boundary = EosRewardLogitsProcessor(eos, max_new_tokens, prompt_length, at_boundary=True,
                                                boundary_token_ids=list(range(0, vocab_size, 97)))
    # Both seed versions mutate their input, so each call gets a fresh copy (a copy costs microseconds).
    # One intra-op thread: a per-call cost then does not depend on how busy the other cores are (on a loaded
    # 2-core machine, waking torch's thread pool for 49k-element ops costs more than the ops themselves).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        literal_seconds = _seconds_per_call(lambda: literal(input_ids, scores.clone()), repeats)
        seed_seconds = _seconds_per_call(lambda: vectorised_seed(input_ids, scores.clone()), repeats)
        ramp_seconds = _seconds_per_call(lambda: ramp(input_ids, scores), repeats)
        ramp_boundary_seconds = _seconds_per_call(lambda: ramp_at_boundary(input_ids, scores), repeats)
    finally:
        torch.set_num_threads(threads)

    return {
        "vocab_size": vocab_size,
        "torch_threads": 1,
        "literal_seed_source": source if article_class else f"fallback list-building reference ({source})",
        "literal_seed_ms_per_call": round(literal_seconds * 1e3, 3),
        "vectorised_seed_us_per_call": round(seed_seconds * 1e6, 2),
        "eos_reward_us_per_call": round(ramp_seconds * 1e6, 2),
        "eos_reward_at_boundary_us_per_call": round(ramp_boundary_seconds * 1e6, 2),
        "eos_reward_speedup_vs_literal_seed": round(literal_seconds / ramp_seconds, 1),
        "vectorised_seed_speedup_vs_literal_seed": round(literal_seconds / seed_seconds, 1),
        "vectorised_seed_matches_literal": bool(torch.equal(literal(input_ids, scores.clone()), vectorised_seed(input_ids, scores.clone()))),
    }


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


SAMPLED = {"temperature": 0.7, "top_p": 0.9}  # the sampled half of the engine ratios


def bench_engine(bundle, new_tokens: int = 128, rounds: int = 2, sampling: dict | None = None,
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

    def plain_generate():
        if sampling:
            torch.manual_seed(0)
        out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                    min_new_tokens=new_tokens, do_sample=bool(sampling),
                                    **({"top_k": 0, **sampling} if sampling else {}),  # top_k=0: no default top-k 50
                                    eos_token_id=eos, pad_token_id=bundle.tokenizer.pad_token_id)
        assert out.shape[1] - ids.shape[1] == new_tokens

    settings = Settings(max_new_tokens=new_tokens, **sampling)
    pair = [Variant(name, interventions) for name, interventions in EQUAL_LENGTH_COLUMNS]
    single = pair[1:]

    def engine(variants):
        trace = compare(bundle, prompt, variants, settings)
        assert all(len(v.token_ids) == new_tokens for v in trace.variants)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        plain_generate()  # warm-up; the engine's first runs measure its kernels for 1 and 2 rows if not cached
        engine(pair)
        engine(single)
        generate_s = pair_s = single_s = float("inf")
        for _ in range(rounds):
            generate_s = min(generate_s, _timed(plain_generate))
            pair_s = min(pair_s, _timed(lambda: engine(pair)))
            single_s = min(single_s, _timed(lambda: engine(single)))
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
        "single_with_telemetry_vs_generate": round(single_s / generate_s, 3),  # target <= 1.05
        "decode_kernels": {rows: kernels["choices"].get(rows) for rows in ("1", "2")},
    }


def bench_engines(bundle, new_tokens: int = 128, rounds: int = 2) -> dict:
    """The engine ratios greedy and sampled, with 1 and 2 torch threads, and the CPU they were measured on."""
    from playground.kernels import cpu_name

    results = {"cpu": cpu_name()}
    for threads in (1, 2):
        for name, sampling in (("greedy", None), ("sampled", SAMPLED)):
            results[f"{name}_{threads}_threads"] = bench_engine(bundle, new_tokens, rounds, sampling, threads)
    return results


def bench_step_overhead(bundle, rows: int = 64, vocab_size: int = 32000, steps: int = 8) -> dict:
    """The loop's per-step CPU work (processors, sampling, top-k, telemetry) for ``rows`` rows — 8 runs of 8
    columns, half of them with the EOS ramp — on random logits of ``vocab_size``, greedy and sampled, beside one
    decode forward pass of the embedded model at ``rows`` rows; one torch thread. Median milliseconds per step."""
    from playground.engine import Comparison, Settings, Variant
    from playground.kernels import DecodeKernels

    columns = [Variant(f"c{i}", ["ban_eos"] + (["eos_reward"] if i % 2 else [])) for i in range(8)]
    generator = torch.Generator().manual_seed(0)

    def per_step_ms(settings: Settings) -> float:
        runs = [Comparison(bundle, RAMBLING_PROMPT, columns, settings) for _ in range(rows // len(columns))]
        for run in runs:
            run._begin()
        seconds = []
        for _ in range(steps):
            logits = [torch.randn(len(columns), vocab_size, generator=generator) * 4 for _ in runs]
            started = time.perf_counter()
            for run, raw in zip(runs, logits):
                run._step(raw, list(range(len(columns))))
            seconds.append(time.perf_counter() - started)
        return sorted(seconds)[len(seconds) // 2] * 1e3

    def forward_ms() -> float:
        from playground.prompts import encode_prompt

        ids = torch.tensor([encode_prompt(bundle.tokenizer, RAMBLING_PROMPT)] * rows)
        with torch.inference_mode(), DecodeKernels(bundle.model) as kernels:
            out = bundle.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            kernels.use(rows)
            seconds = []
            for _ in range(4):
                started = time.perf_counter()
                out = bundle.model(input_ids=token, cache=cache, use_cache=True)
                seconds.append(time.perf_counter() - started)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
        return sorted(seconds)[len(seconds) // 2] * 1e3

    greedy = _one_thread(lambda: per_step_ms(Settings(max_new_tokens=steps + 1)))
    sampled = _one_thread(lambda: per_step_ms(Settings(max_new_tokens=steps + 1, **SAMPLED)))
    forward = _one_thread(forward_ms)
    return {"rows": rows, "vocab_size": vocab_size, "torch_threads": 1,
            "step_overhead_ms_greedy": round(greedy, 1),  # target <= 25
            "step_overhead_ms_sampled": round(sampled, 1),  # target <= 60
            "forward_ms_embedded_model": round(forward, 1)}
def bench_adapters(new_tokens: int = 128, rounds: int = 2) -> dict:
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

    def two_generates():
        for model in (BASE, "tuned"):
            with bundle.adapter_enabled(model):
                out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                            min_new_tokens=new_tokens, do_sample=False, eos_token_id=eos,
                                            pad_token_id=bundle.tokenizer.pad_token_id)
            assert out.shape[1] - ids.shape[1] == new_tokens

    pair = [Variant(model, ["ban_eos"], model=model) for model in (BASE, "tuned")]

    def engine():
        trace = compare(bundle, RAMBLING_PROMPT, pair, Settings(max_new_tokens=new_tokens))
        assert all(len(v.token_ids) == new_tokens for v in trace.variants)

    two_generates()  # warm-up
    generate_s = pair_s = float("inf")
    for _ in range(rounds):
        generate_s = min(generate_s, _timed(two_generates))
        pair_s = min(pair_s, _timed(engine))
    return {
        "new_tokens": new_tokens,
        "two_generates_s": round(generate_s, 2),
        "engine_pair_s": round(pair_s, 2),
        "adapter_pair_vs_two_generates": round(pair_s / generate_s, 3),  # target <= 0.75
    }


@contextlib.contextmanager
def serve_app(timeout: float = 180):
    """``python app.py`` on a free local port, in its own process with one torch thread; yields its URL.

    A separate process, so the server's decode thread and its streaming (HTTP, JSON) are not slowed by this
    process's client or its GIL; one thread (OMP_NUM_THREADS=1), because on a 2-core machine a decode on both
    cores would fight the streaming and the client for them, and a ratio would then measure that contention
    rather than what streaming costs. The engine reference is measured with one thread too.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], cwd=APP.parent, env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"app.py exited early:\n{log.read()}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"app.py did not serve within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _one_thread(call):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return call()
    finally:
        torch.set_num_threads(threads)


def rest_stream_bytes(url: str, arguments: dict) -> tuple[int, int]:
    """(bytes, steps) of /compare's REST stream — what curl or a JS client gets: POST the call, then read its
    server-sent events to the end."""
    request = urllib.request.Request(f"{url}gradio_api/call/v2/compare", data=json.dumps(arguments).encode(),
                                     headers={"Content-Type": "application/json"})
    event_id = json.load(urllib.request.urlopen(request, timeout=60))["event_id"]
    size = steps = 0
    with urllib.request.urlopen(f"{url}gradio_api/call/v2/compare/{event_id}", timeout=600) as response:
        kind = None
        for line in response:
            size += len(line)
            if line.startswith(b"event: "):
                kind = line[7:].strip()
            elif line.startswith(b"data: ") and kind == b"generating":  # "complete" repeats the last event
                for event in json.loads(line[6:]):
                    steps += sum(len(column["steps"]) for column in event["columns"].values())
            elif line.startswith(b"data: ") and kind == b"error":
                raise RuntimeError(f"/compare failed: {line[6:].decode()}")
    return size, steps


def bench_ui(bundle, url: str, new_tokens: int = 96) -> dict:
    """Against the app served at ``url`` (see :func:`serve_app`): what reaches a ``gradio_client`` consumer of
    /compare compared with the engine alone, the bytes of the REST stream for 512 tokens × 4 columns, 8 clients
    at once compared with one, and how often the page's Run handler redraws the live chart."""
    from gradio_client import Client

    from playground.engine import Settings, Variant, compare

    prompt = RAMBLING_PROMPT
    columns = [c for _, c in EQUAL_LENGTH_COLUMNS]
    variants = [Variant(name, interventions) for name, interventions in EQUAL_LENGTH_COLUMNS]
    _one_thread(lambda: compare(bundle, prompt, variants, Settings(max_new_tokens=4)))  # warm-up
    engine_s = _one_thread(lambda: _timed(lambda: compare(bundle, prompt, variants, Settings(max_new_tokens=new_tokens))))

    client = Client(url, verbose=False)
    list(client.submit(api_name="/compare", prompt=prompt, columns=columns, max_new_tokens=4))  # warm-up
    submitted = time.perf_counter()
    received, arrivals = 0, []
    for event in client.submit(api_name="/compare", prompt=prompt, columns=columns, max_new_tokens=new_tokens):
        arrivals.append(time.perf_counter())
        received += sum(len(column["steps"]) for column in event["columns"].values())
    assert received == 2 * new_tokens, received
    # From the first event (sent as the run starts, before its prefill) to the last: the decode as the client
    # sees it. Connecting and queueing before the first event are reported separately.
    stream_rate = received / (arrivals[-1] - arrivals[0])

    # REST: 4 columns that all run to 512 tokens (EOS banned in each).
    rest_columns = [["ban_eos"], ["ban_eos", "eos_reward"], ["ban_eos", "decay_penalty"], ["ban_eos", "concise_suffix"]]
    rest_bytes, rest_steps = rest_stream_bytes(url, {"prompt": prompt, "columns": rest_columns, "max_new_tokens": 512})
    assert rest_steps == 4 * 512, rest_steps

    # 8 clients submit a 2-column, 64-token run at the same moment, against one such run alone.
    def one_run(own: Client) -> None:
        events = list(own.submit(api_name="/compare", prompt=prompt, columns=columns, max_new_tokens=64))
        assert sum(len(column["steps"]) for event in events for column in event["columns"].values()) == 128

    alone_s = _timed(lambda: one_run(client))
    clients = [Client(url, verbose=False) for _ in range(8)]
    barrier = threading.Barrier(8)

    def together(own: Client) -> float:
        barrier.wait()
        return _timed(lambda: one_run(own))

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(together, clients))
    eight_s = time.perf_counter() - started

    return {
        "new_tokens": new_tokens,
        "engine_tokens_per_s": round(2 * new_tokens / engine_s, 2),
        "client_tokens_per_s": round(stream_rate, 2),
        "client_fraction_of_engine": round(stream_rate / (2 * new_tokens / engine_s), 3),  # target >= 0.9
        "seconds_to_first_event": round(arrivals[0] - submitted, 3),
        "events_received": len(arrivals),
        "rest_bytes_512x4": rest_bytes,  # target <= 4 MB
        "rest_bytes_per_token": round(rest_bytes / rest_steps, 1),
        "one_run_64x2_seconds": round(alone_s, 2),
        "eight_runs_64x2_seconds": round(eight_s, 2),
        "concurrent_8_vs_one": round(eight_s / alone_s, 3),  # target <= 2.5
    }


def bench_page(bundle, url: str, new_tokens: int = 128) -> dict:
    """The page in headless Chromium against the app served at ``url``: its decode speed as its statuses show it
    against the engine alone (one thread, like the server) for the same 2 columns, and the bytes it receives
    per token (see :mod:`playground.bench_page`)."""
    from playground.bench_page import PAGE_COLUMNS, measure_page
    from playground.engine import Settings, Variant, compare

    variants = [Variant(name, [] if name == "baseline" else [name]) for name in PAGE_COLUMNS]
    trace = _one_thread(lambda: compare(bundle, RAMBLING_PROMPT, variants, Settings(max_new_tokens=new_tokens)))
    assert all(len(v.steps) == new_tokens for v in trace.variants)
    engine = sum(v.tokens_per_second for v in trace.variants) / len(trace.variants)
    return measure_page(url, engine, new_tokens)


def bench_evaluate(bundle, prompts: int = 16, new_tokens: int = 32) -> dict:
    """Wall time of an evaluation (``prompts`` built-in single-turn prompts × baseline and eos_reward, greedy)
    against one plain ``generate()`` call per (prompt, column) with the same processors, in the same run.

    The evaluation decodes through ``engine.run_all``; the ratio reaches its target (≤ 0.35) only when that
    batches rows across comparisons."""
    from playground.engine import Settings, Variant
    from playground.evaluate.prompt_files import PromptSet, builtin_prompts
    from playground.evaluate.runner import Evaluation
    from playground.interventions import build_interventions
    from playground.prompts import encode_prompt

    chosen = [p for p in builtin_prompts().prompts if not p.history and p.system is None][:prompts]
    columns = [Variant("baseline", []), Variant("eos_reward", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.5}}])]
    tokenizer, stop_ids = bundle.tokenizer, bundle.info.stop_token_ids

    def sequential_generate() -> int:
        generated = 0
        for prompt in chosen:
            ids = torch.tensor([encode_prompt(tokenizer, prompt.text)])
            for column in columns:
                built = build_interventions(column.interventions, tokenizer=tokenizer, eos_token_ids=stop_ids,
                                            max_new_tokens=new_tokens, prompt_length=None)
                out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                            do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
                                            logits_processor=built.logits_processors)
                generated += out.shape[1] - ids.shape[1]
        return generated

    def evaluate() -> int:
        evaluation = Evaluation(bundle, PromptSet(chosen), columns, Settings(max_new_tokens=new_tokens))
        for _ in evaluation.run():
            pass
        return sum(row.steps for row in evaluation.report().rows)

    warm = torch.tensor([encode_prompt(tokenizer, chosen[0].text)])
    bundle.model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=2, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)
    started = time.perf_counter()
    generate_tokens = sequential_generate()
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    evaluate_tokens = evaluate()
    evaluate_s = time.perf_counter() - started
    return {
        "prompts": len(chosen),
        "columns": len(columns),
        "new_tokens": new_tokens,
        "generated_tokens": evaluate_tokens,
        "same_tokens_as_generate": evaluate_tokens == generate_tokens,
        "sequential_generate_s": round(generate_s, 2),
        "evaluate_s": round(evaluate_s, 2),
        "evaluate_vs_sequential_generate": round(evaluate_s / generate_s, 3),  # target <= 0.35
    }


def bench_finetune(steps: int = 4) -> dict:
    """Seconds per step of the fine-tune lab's default ``correct`` recipe (SFTTrainer, LoRA r 16 on all linear
    layers, batch 4, the built-in set) against a plain PEFT loop on the same batches (forward, backward, AdamW),
    each on a fresh copy of the embedded model, in the same run."""
    from peft import LoraConfig, get_peft_model

    from playground.finetune.data import builtin_data
    from playground.finetune.recipes import RECIPES, collator_for, encode
    from playground.finetune.train import FineTune, TrainConfig
    from playground.models import load_model

    config = TrainConfig()
    with tempfile.TemporaryDirectory() as folder:
        job = FineTune(load_model(), builtin_data(), TrainConfig(steps=steps + 1), Path(folder) / "adapter")
        marks = [(p.step, p.elapsed) for p in job.run()]
    first, last = marks[0], marks[-1]  # the first step warms up: time the rest
    sft_seconds = (last[1] - first[1]) / (last[0] - first[0])
    bundle = load_model()
    model = get_peft_model(bundle.model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    recipe = RECIPES["correct"]
    examples = [encode(bundle.tokenizer, e, recipe) for e in builtin_data().examples]
    collate = collator_for(bundle.tokenizer, recipe)
    times = []
    for step in range(steps + 1):
        batch = collate(examples[step * config.batch_size:(step + 1) * config.batch_size])
        started = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    plain_seconds = sum(times[1:]) / steps
    return {"steps_timed": steps, "sft_seconds_per_step": round(sft_seconds, 3),
            "plain_lora_seconds_per_step": round(plain_seconds, 3),
            "sft_vs_plain_lora": round(sft_seconds / plain_seconds, 3),
            "default_steps": config.steps, "default_correct_seconds": round(sft_seconds * config.steps, 1)}


def main(argv: list[str] | None = None) -> int:
    from playground.models import load_model

    if argv and any(arg == "--device" or arg.startswith("--device=") for arg in argv):
        from playground.bench_device import main as device_main  # the device check (concurrent runs, memory)

        return device_main(argv)

    bundle = load_model()
    results = {"processors": bench_processors(), "engine": bench_engines(bundle), "step": bench_step_overhead(bundle),
               "adapters": bench_adapters()}
    with serve_app() as url:
        results["ui"] = bench_ui(bundle, url)
        results["page"] = bench_page(bundle, url)
    results["evaluate"] = bench_evaluate(bundle)
    results["finetune"] = bench_finetune()
    p = results["processors"]
    print(f"logits processors, one row of {p['vocab_size']} logits, 1 CPU thread (literal article code from {p['literal_seed_source']}):")
    print(f"  article's literal EosTokenRewardLogitsProcessor  {p['literal_seed_ms_per_call']:10.3f} ms/call")
    print(f"  SeedEosTokenRewardLogitsProcessor (vectorised)   {p['vectorised_seed_us_per_call']:10.2f} µs/call"
          f"  ({p['vectorised_seed_speedup_vs_literal_seed']:.0f}x faster, identical output: {p['vectorised_seed_matches_literal']})")
    print(f"  EosRewardLogitsProcessor                         {p['eos_reward_us_per_call']:10.2f} µs/call"
          f"  ({p['eos_reward_speedup_vs_literal_seed']:.0f}x faster)")
    print(f"  EosRewardLogitsProcessor, at_boundary            {p['eos_reward_at_boundary_us_per_call']:10.2f} µs/call")
    e = results["engine"]
    print(f"engine, embedded model, {e['greedy_1_threads']['new_tokens']} new tokens, EOS banned, on {e['cpu']}:")
    for key, r in e.items():
        if key == "cpu":
            continue
        mode = "greedy" if r["sampling"] == "greedy" else "sampled (T 0.7, top-p 0.9)"
        print(f"  {mode}, {r['torch_threads']} thread(s): generate() {r['generate_tokens_per_s']:.2f} tokens/s; "
              f"baseline + 1 variant {r['engine_pair_tokens_per_s']:.2f} tokens/s, time vs two generate() calls "
              f"{r['pair_vs_two_generates']:.3f} (target <= 0.60); 1 variant + telemetry "
              f"{r['engine_single_tokens_per_s']:.2f} tokens/s, vs one generate() {r['single_with_telemetry_vs_generate']:.3f} "
              f"(target <= 1.05)")
        print(f"    decode kernels (rows: shape -> kernel): {json.dumps(r['decode_kernels'])}")
    t = results["step"]
    print(f"per-step CPU work, {t['rows']} rows x {t['vocab_size']} vocabulary, 1 thread: greedy "
          f"{t['step_overhead_ms_greedy']:.1f} ms (target <= 25), sampled {t['step_overhead_ms_sampled']:.1f} ms "
          f"(target <= 60); the embedded model's forward pass at {t['rows']} rows {t['forward_ms_embedded_model']:.1f} ms")
    a = results["adapters"]
    print(f"base + LoRA adapter in one run {a['engine_pair_s']:.2f} s vs two generate() calls (adapter off, on) "
          f"{a['two_generates_s']:.2f} s, {a['new_tokens']} tokens: {a['adapter_pair_vs_two_generates']:.3f} (target <= 0.75)")
    u = results["ui"]
    print(f"app (its own process, 1 thread), /compare over gradio_client, 2 columns x {u['new_tokens']} tokens:")
    print(f"  engine alone {u['engine_tokens_per_s']:.2f} tokens/s, reaching the client {u['client_tokens_per_s']:.2f} tokens/s: "
          f"fraction {u['client_fraction_of_engine']:.3f} (target >= 0.9), {u['events_received']} events, "
          f"{u['seconds_to_first_event']:.2f} s to the first")
    print(f"  REST stream, 512 tokens x 4 columns: {u['rest_bytes_512x4'] / 1e6:.2f} MB "
          f"({u['rest_bytes_per_token']:.0f} bytes per token; target <= 4 MB)")
    print(f"  8 clients at once, 2 columns x 64 tokens each: {u['eight_runs_64x2_seconds']:.1f} s vs one alone "
          f"{u['one_run_64x2_seconds']:.1f} s: {u['concurrent_8_vs_one']:.2f}x (target <= 2.5)")
    g = results["page"]
    if "skipped" in g:
        print(f"page in Chromium: skipped ({g['skipped']})")
    else:
        print("page in headless Chromium (the same app), 2 columns x 128 tokens and 4 columns x 256 / 64 tokens:")
        print(f"  each column {g['page_column_tokens_per_s']:.2f} tokens/s as the page shows it vs the engine's "
              f"{g['engine_column_tokens_per_s']:.2f}: fraction {g['page_fraction_of_engine']:.3f} (target >= 0.8); "
              f"click to last status {g['page_end_to_end_fraction']:.3f}")
        print(f"  {g['page_bytes_per_token']} bytes per token at 256 x 4 ({g['page_bytes_256x4'] / 1e6:.2f} MB), "
              f"{g['page_bytes_per_token_64']} at 64 x 4 (target <= 2048, flat in length)")
    v = results["evaluate"]
    print(f"evaluate, {v['prompts']} prompts x {v['columns']} columns, greedy, up to {v['new_tokens']} new tokens "
          f"({v['generated_tokens']} generated, same as generate(): {v['same_tokens_as_generate']}):")
    print(f"  {v['evaluate_s']:.1f} s vs {v['sequential_generate_s']:.1f} s for one generate() per (prompt, column): "
          f"{v['evaluate_vs_sequential_generate']:.3f} (target <= 0.35)")
    f = results["finetune"]
    print("fine-tune lab, recipe correct, LoRA r 16 all linear, batch 4, embedded model:")
    print(f"  SFTTrainer {f['sft_seconds_per_step']:.2f} s/step vs a plain PEFT loop {f['plain_lora_seconds_per_step']:.2f} "
          f"s/step: {f['sft_vs_plain_lora']:.2f}x; the default {f['default_steps']} steps take "
          f"~{f['default_correct_seconds']:.0f} s (target <= 120)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
