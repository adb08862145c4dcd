"""``python -m playground bench --device cuda|cpu``: does this machine serve the Space's load?

On CUDA it loads the model as spaces.yaml does (Llama-2-7b-chat in 4-bit on a T4) and runs 1, 8 and 16 concurrent
4-column runs of 512 tokens each (EOS banned, so every column runs to the end), with the KV budget the app would
use. On the CPU the same code runs with the embedded model, a small budget and fewer, shorter runs. For each load
it prints tokens/s, the time to the first token (median and worst), the KV cache's peak against its budget (and on
CUDA the allocator's peak against the card) and whether every run finished with all its tokens.

    python -m playground bench --device cuda
    python -m playground bench --device cpu --runs 1 2 4 --new-tokens 32 --kv-budget-mb 24
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import torch

from ..decoder import MB, decode_loop
from ..engine import Comparison, Settings, Variant

# Prompts of different lengths, so joining runs pad against each other as visitors' runs do.
PROMPTS = ["What can I do in Paris?", "Write a haiku about the sea.",
           "List every country in Europe with its capital, one per line, and say what each is known for.",
           "Explain, step by step and with an example a child would follow, why the sky is blue during the day "
           "and red at sunset."]
COLUMNS = [Variant("baseline", ["ban_eos"]), Variant("eos_reward", ["ban_eos", "eos_reward"]),
           Variant("concise_suffix", ["ban_eos", "concise_suffix"]), Variant("decay_penalty", ["ban_eos", "decay_penalty"])]
DEFAULTS = {"cuda": {"runs": (1, 8, 16), "new_tokens": 512, "kv_budget_mb": None},
            "cpu": {"runs": (1, 2, 4), "new_tokens": 32, "kv_budget_mb": 24.0}}


def load_served(device: str):
    """The model as the app serves it: spaces.yaml's on CUDA, the embedded model on the CPU."""
    from ..models import load_model
    from ..space.config import load_config

    if device == "cpu":
        return load_model(device="cpu"), None
    config = load_config()
    options = config.model.options(cuda=True)
    return load_model(config.model.reference, **{**options, "device": "cuda"}), config.kv_budget_mb


def concurrent_runs(bundle, count: int, new_tokens: int) -> dict:
    """``count`` 4-column runs submitted at once, each read by its own thread as a visitor's page would."""
    runs = [Comparison(bundle, PROMPTS[k % len(PROMPTS)], COLUMNS, Settings(max_new_tokens=new_tokens))
            for k in range(count)]
    first_token: list[float | None] = [None] * count
    started = time.perf_counter()

    def read(k: int) -> None:
        try:
            for trace in runs[k].run():
                if first_token[k] is None and trace.variants[0].steps:
                    first_token[k] = time.perf_counter() - started
        except Exception:  # noqa: BLE001 — a stopped run is reported below, by its error
            pass

    readers = [threading.Thread(target=read, args=(k,)) for k in range(count)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    seconds = time.perf_counter() - started
    tokens = sum(len(v.token_ids) for run in runs for v in run.trace.variants)
    waits = [t for t in first_token if t is not None]
    return {
        "runs": count,
        "columns": len(COLUMNS),
        "new_tokens": new_tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "first_token_median_s": round(statistics.median(waits), 3) if waits else None,
        "first_token_worst_s": round(max(waits), 3) if waits else None,
        "seconds": round(seconds, 2),
        "all_finished": all(run.error is None and all(len(v.token_ids) == new_tokens for v in run.trace.variants)
                            for run in runs),
        "errors": sorted({str(run.error) for run in runs if run.error is not None}),
    }


def device_check(device: str, bundle=None, *, runs=None, new_tokens: int | None = None,
                 kv_budget_mb: float | None = None) -> dict:
    """Every load in ``runs`` (counts of concurrent runs) on ``device``; ``bundle`` defaults to the served model."""
    defaults = DEFAULTS[device]
    configured = None
    if bundle is None:
        bundle, configured = load_served(device)
    loop = decode_loop(bundle, kv_budget_mb or configured or defaults["kv_budget_mb"])
    results = []
    for count in runs or defaults["runs"]:
        loop.peak_positions = 0
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = concurrent_runs(bundle, count, new_tokens or defaults["new_tokens"])
        result["kv_peak_mb"] = round(loop.peak_positions * loop.position_bytes / MB, 2)
        if device == "cuda":
            result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / MB, 1)
        results.append(result)
    memory = {"kv_budget_mb": round(loop.kv_budget / MB, 2), "kv_bytes_per_position": loop.position_bytes}
    if device == "cuda":
        memory["cuda_total_mb"] = round(torch.cuda.get_device_properties(0).total_memory / MB, 1)
    return {"device": device, "model": bundle.info.name, "dtype": bundle.info.dtype, **memory, "loads": results}


def report(result: dict) -> str:
    lines = [f"{result['model']} ({result['dtype']}) on {result['device']}: KV budget {result['kv_budget_mb']:.1f} MB "
             f"({result['kv_bytes_per_position'] / 1024:.0f} KiB per cached position)"]
    for load in result["loads"]:
        cuda = f", CUDA peak {load['cuda_peak_mb']:.0f} of {result['cuda_total_mb']:.0f} MB" if "cuda_peak_mb" in load else ""
        lines.append(
            f"  {load['runs']:2d} runs x {load['columns']} columns x {load['new_tokens']} tokens: "
            f"{load['tokens_per_s']:8.1f} tokens/s, first token {load['first_token_median_s']} s median / "
            f"{load['first_token_worst_s']} s worst, KV peak {load['kv_peak_mb']:.1f} of {result['kv_budget_mb']:.1f} MB"
            f"{cuda}, every run finished: {load['all_finished']}" + (f" ({'; '.join(load['errors'])})" if load["errors"] else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground bench --device",
                                     description="Concurrent 4-column runs on this machine, as the app serves them.")
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--runs", type=int, nargs="+", help="concurrent runs per load (cuda: 1 8 16; cpu: 1 2 4)")
    parser.add_argument("--new-tokens", type=int, help="tokens per column (cuda: 512; cpu: 32)")
    parser.add_argument("--kv-budget-mb", type=float, help="the KV budget (cuda: spaces.yaml's or measured; cpu: 24)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda: no CUDA GPU is visible to torch on this machine\n")
    result = device_check(args.device, runs=args.runs, new_tokens=args.new_tokens, kv_budget_mb=args.kv_budget_mb)
    print(report(result))
    print(json.dumps(result))
    return 0 if all(load["all_finished"] for load in result["loads"]) else 1
