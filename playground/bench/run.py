"""``python -m playground bench``: every part of the benchmark, then readable lines and one JSON line of ratios
(``--device`` hands over to :mod:`playground.bench.device`)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

from .common import serve_app
from .decoding import bench_adapters, bench_engines, bench_step_overhead
from .evaluate import bench_evaluate
from .finetune import bench_finetune
from .page import bench_page
from .processors import bench_processors
from .ui import bench_ui

# Bumped when a figure's meaning or a target changes, so that rows of docs/performance.md measured by different
# benches are not compared as if alike. 1: the bench before targets were ratios (the issue-36 rows); 2: ratios only.
BENCH_VERSION = 2

# Each part's measure, in the order they run; the parts in NEEDS_MODEL take the embedded model, the served ones
# also the URL of the app running in its own process.
PARTS = {"processors": bench_processors, "engine": bench_engines, "step": bench_step_overhead,
         "adapters": bench_adapters, "ui": bench_ui, "page": bench_page, "evaluate": bench_evaluate,
         "finetune": bench_finetune}
NEEDS_MODEL = ("engine", "step", "ui", "page", "evaluate")
SERVED = ("ui", "page")  # the parts that need the app running in its own process
# ``--quick``: the parts that give the headline ratios, each with fewer tokens, rounds and steps (a few minutes);
# the full bench's repetitions are the parts' defaults.
QUICK = {"engine": {"rounds": 1, "samplings": ("greedy",)}, "step": {"steps": 4}, "adapters": {"rounds": 1},
         "page": {"byte_runs": False, "rounds": 1}, "finetune": {"steps": 3}}

# Every target, as a ratio measured in one run (or a fraction of the forward pass, or bytes per token), so that it
# means the same on any CPU: (name, part, how to read the figure from the part's result, "<=" or ">=", bound).
TARGETS = (
    ("pair_vs_two_generates_greedy_1_thread", "engine", lambda r: r["greedy_1_threads"]["pair_vs_two_generates"], "<=", 0.60),
    ("pair_vs_two_generates_greedy_2_threads", "engine", lambda r: r["greedy_2_threads"]["pair_vs_two_generates"], "<=", 0.60),
    ("pair_vs_two_generates_sampled_1_thread", "engine", lambda r: r["sampled_1_threads"]["pair_vs_two_generates"], "<=", 0.60),
    ("pair_vs_two_generates_sampled_2_threads", "engine", lambda r: r["sampled_2_threads"]["pair_vs_two_generates"], "<=", 0.60),
    ("single_with_telemetry_vs_generate_greedy_1_thread", "engine",
     lambda r: r["greedy_1_threads"]["single_with_telemetry_vs_generate"], "<=", 1.05),
    ("single_with_telemetry_vs_generate_greedy_2_threads", "engine",
     lambda r: r["greedy_2_threads"]["single_with_telemetry_vs_generate"], "<=", 1.05),
    ("step_overhead_fraction_of_forward_greedy", "step",
     lambda r: r["step_overhead_fraction_greedy"], "<=", 0.05),
    ("step_overhead_fraction_of_forward_sampled", "step",
     lambda r: r["step_overhead_fraction_sampled"], "<=", 0.10),
    ("adapter_pair_vs_two_generates_1_thread", "adapters", lambda r: r["1_threads"]["adapter_pair_vs_two_generates"], "<=", 0.75),
    ("adapter_pair_vs_two_generates_2_threads", "adapters", lambda r: r["2_threads"]["adapter_pair_vs_two_generates"], "<=", 0.75),
    ("client_fraction_of_engine", "ui", lambda r: r["client_fraction_of_engine"], ">=", 0.9),
    ("rest_bytes_512x4", "ui", lambda r: r["rest_bytes_512x4"], "<=", 4_000_000),
    ("concurrent_8_vs_one", "ui", lambda r: r["concurrent_8_vs_one"], "<=", 2.5),
    ("page_fraction_of_engine", "page", lambda r: r["page_fraction_of_engine"], ">=", 0.8),
    ("page_bytes_per_token", "page", lambda r: r["page_bytes_per_token"], "<=", 2048),
    ("evaluate_vs_sequential_generate", "evaluate", lambda r: r["evaluate_vs_sequential_generate"], "<=", 0.35),
    ("eos_reward_speedup_vs_literal_seed", "processors", lambda r: r["eos_reward_speedup_vs_literal_seed"], ">=", 1000),
    ("sft_vs_plain_lora", "finetune", lambda r: r["sft_vs_plain_lora"], "<=", 1.2),
)


def verdicts(results: dict) -> dict:
    """Each target whose figure this run measured: its value, the target and whether it was met.

    >>> verdicts({"finetune": {"sft_vs_plain_lora": 1.31}})
    {'sft_vs_plain_lora': {'value': 1.31, 'target': '<= 1.2', 'met': False}}
    >>> verdicts({"page": {"skipped": "no browser"}})
    {}
    """
    found = {}
    for name, part, read, comparison, bound in TARGETS:
        try:
            value = read(results[part])
        except KeyError:  # the part did not run, ran without this figure (--quick), or was skipped
            continue
        met = value <= bound if comparison == "<=" else value >= bound
        found[name] = {"value": round(value, 3), "target": f"{comparison} {bound}", "met": met}
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m playground bench",
        description="Measure the engine, the app and the fine-tune lab against their references, as ratios taken in "
                    "one run; print readable lines, then one JSON line. The whole bench takes about 10 minutes on 2 "
                    "CPU cores. --device hands over to the device check (concurrent runs and memory on a GPU).")
    parser.add_argument("--quick", action="store_true",
                        help="only the headline ratios, with fewer tokens and rounds: under 3 minutes on 2 cores")
    parser.add_argument("--only", metavar="PARTS", type=lambda text: [part.strip() for part in text.split(",")],
                        help=f"comma-separated parts to run (default: all): {', '.join(PARTS)}")
    args, rest = parser.parse_known_args(argv)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)} (--device starts the device check)")
    unknown = [part for part in args.only or () if part not in PARTS]
    if unknown:
        parser.error(f"--only: no part named {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    if argv and any(arg == "--device" or arg.startswith("--device=") for arg in argv):
        from playground.bench.device import main as device_main  # the device check (concurrent runs, memory)

        return device_main(argv)
    args = parse_args(argv)
    wanted = args.only or (QUICK if args.quick else PARTS)
    options = QUICK if args.quick else {}

    from playground.kernels import cpu_name
    from playground.models import load_model

    bundle = load_model() if any(name in NEEDS_MODEL for name in wanted) else None

    # What a row of docs/performance.md needs besides the figures; the load average before and after, because
    # other processes on the machine move every figure (a ratio less than a time, but still).
    results = {"cpu": cpu_name(), "date": datetime.date.today().isoformat(), "bench_version": BENCH_VERSION,
               "quick": args.quick, "load_average_before": round(os.getloadavg()[0], 2)}
    seconds = {}

    def part(name, url=None):  # each part's wall time too: the whole bench should stay near 10 minutes
        model = [bundle] if name in NEEDS_MODEL else []
        started = time.perf_counter()
        results[name] = PARTS[name](*model, *([url] if url else []), **options.get(name, {}))
        seconds[name] = round(time.perf_counter() - started, 1)

    served = [name for name in PARTS if name in wanted and name in SERVED]
    for name in (name for name in PARTS if name in wanted):
        if name not in SERVED:
            part(name)
        elif name == served[0]:  # one app process for the served parts, which sit next to each other in PARTS
            with serve_app() as url:
                for name in served:
                    part(name, url)
    results["seconds"] = seconds
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    results["targets"] = verdicts(results)
    report(results)
    return 0


def report(results: dict) -> None:
    """The readable lines for the parts that ran, then the whole result as one JSON line."""
    seconds = results["seconds"]
    print(f"bench version {results['bench_version']}{' (--quick)' if results['quick'] else ''}, {results['cpu']}, "
          f"{results['date']}, load average {results['load_average_before']} before, {results['load_average_after']} after")
    if "processors" in results:
        p = results["processors"]
        print(f"logits processors, one row of {p['vocab_size']} logits, 1 CPU thread (literal article code from {p['literal_seed_source']}):")
        print(f"  article's literal EosTokenRewardLogitsProcessor  {p['literal_seed_ms_per_call']:10.3f} ms/call")
        print(f"  SeedEosTokenRewardLogitsProcessor (vectorised)   {p['vectorised_seed_us_per_call']:10.2f} µs/call"
              f"  ({p['vectorised_seed_speedup_vs_literal_seed']:.0f}x faster, identical output: {p['vectorised_seed_matches_literal']})")
        print(f"  EosRewardLogitsProcessor                         {p['eos_reward_us_per_call']:10.2f} µs/call"
              f"  ({p['eos_reward_speedup_vs_literal_seed']:.0f}x faster)")
        print(f"  EosRewardLogitsProcessor, at_boundary            {p['eos_reward_at_boundary_us_per_call']:10.2f} µs/call")
    if "engine" in results:
        e = results["engine"]
        print(f"engine, embedded model, {e['greedy_1_threads']['new_tokens']} new tokens, EOS banned, on {e['cpu']}:")
        for key, r in e.items():
            if key == "cpu":
                continue
            mode = "greedy" if r["sampling"] == "greedy" else "sampled (T 0.7, top-p 0.9)"
            print(f"  {mode}, {r['torch_threads']} thread(s): generate() {r['generate_tokens_per_s']:.2f} tokens/s; "
                  f"baseline + 1 variant {r['engine_pair_tokens_per_s']:.2f} tokens/s, time vs two generate() calls "
                  f"{r['pair_vs_two_generates']:.3f} (target <= 0.60; rounds {r['pair_vs_two_generates_spread']}); "
                  f"1 variant + telemetry "
                  f"{r['engine_single_tokens_per_s']:.2f} tokens/s, vs one generate() {r['single_with_telemetry_vs_generate']:.3f} "
                  f"(target <= 1.05)")
            print(f"    decode kernels (rows: shape -> kernel): {json.dumps(r['decode_kernels'])}")
    if "step" in results:
        t = results["step"]
        print(f"per-step CPU work, {t['rows']} rows x {t['vocab_size']} vocabulary, 1 thread, as a fraction of the "
              f"embedded model's forward pass at {t['rows']} rows ({t['forward_ms_embedded_model']:.1f} ms): greedy "
              f"{t['step_overhead_fraction_greedy']:.3f} ({t['step_overhead_ms_greedy']:.1f} ms; target <= 0.05), "
              f"sampled {t['step_overhead_fraction_sampled']:.3f} ({t['step_overhead_ms_sampled']:.1f} ms; target <= 0.10)")
        print(f"  of which telemetry: greedy {t['telemetry_ms_greedy']:.1f} ms, sampled {t['telemetry_ms_sampled']:.1f} ms: "
              f"{t['telemetry_fraction_of_step_greedy']:.3f} / {t['telemetry_fraction_of_step_sampled']:.3f} of a whole "
              f"step (target < 0.05)")
    if "adapters" in results:
        a = results["adapters"]
        for threads in (1, 2):
            r = a[f"{threads}_threads"]
            print(f"base + LoRA adapter in one run, {threads} thread(s): {r['engine_pair_s']:.2f} s vs two generate() calls "
                  f"(adapter off, on) {r['two_generates_s']:.2f} s, {a['new_tokens']} tokens: "
                  f"{r['adapter_pair_vs_two_generates']:.3f} (target <= 0.75; rounds {r['adapter_pair_spread']})")
    if "ui" in results:
        u = results["ui"]
        print(f"app (its own process, 1 thread), /compare over gradio_client, 2 columns x {u['new_tokens']} tokens:")
        print(f"  engine alone {u['engine_tokens_per_s']:.2f} tokens/s, reaching the client {u['client_tokens_per_s']:.2f} tokens/s: "
              f"fraction {u['client_fraction_of_engine']:.3f} (target >= 0.9), {u['events_received']} events, "
              f"{u['seconds_to_first_event']:.2f} s to the first")
        print(f"  REST stream, 512 tokens x 4 columns: {u['rest_bytes_512x4'] / 1e6:.2f} MB "
              f"({u['rest_bytes_per_token']:.0f} bytes per token; target <= 4 MB)")
        print(f"  8 clients at once, 2 columns x 64 tokens each: {u['eight_runs_64x2_seconds']:.1f} s vs one alone "
              f"{u['one_run_64x2_seconds']:.1f} s: {u['concurrent_8_vs_one']:.2f}x (target <= 2.5)")
    if "page" in results:
        g = results["page"]
        if "skipped" in g:
            print(f"page in Chromium: skipped ({g['skipped']})")
        else:
            print("page in headless Chromium (the same app), 2 columns x 128 tokens"
                  + (" and 4 columns x 256 / 64 tokens:" if "page_bytes_per_token" in g else ":"))
            print(f"  each column {g['page_column_tokens_per_s']:.2f} tokens/s as the page shows it vs the engine's "
                  f"{g['engine_column_tokens_per_s']:.2f}: fraction {g['page_fraction_of_engine']:.3f} (target >= 0.8; rounds "
                  f"{g['page_fraction_spread']}); "
                  f"click to last status {g['page_end_to_end_fraction']:.3f}")
            if "page_bytes_per_token" in g:
                print(f"  {g['page_bytes_per_token']} bytes per token at 256 x 4 ({g['page_bytes_256x4'] / 1e6:.2f} MB), "
                      f"{g['page_bytes_per_token_64']} at 64 x 4 (target <= 2048, flat in length)")
    if "evaluate" in results:
        v = results["evaluate"]
        print(f"evaluate, {v['prompts']} prompts x {v['columns']} columns, greedy, up to {v['new_tokens']} new tokens "
              f"({v['generated_tokens']} generated, same as generate(): {v['same_tokens_as_generate']}):")
        print(f"  {v['evaluate_s']:.1f} s vs {v['sequential_generate_s']:.1f} s for one generate() per (prompt, column): "
              f"{v['evaluate_vs_sequential_generate']:.3f} (target <= 0.35)")
    if "finetune" in results:
        f = results["finetune"]
        print("fine-tune lab, recipe correct, LoRA r 16 all linear, batch 4, embedded model:")
        print(f"  SFTTrainer {f['sft_seconds_per_step']:.2f} s/step vs a plain PEFT loop on the same batches "
              f"{f['plain_lora_seconds_per_step']:.2f} s/step: {f['sft_vs_plain_lora']:.2f}x (target <= 1.2; step by step "
              f"{f['sft_vs_plain_lora_spread']}; in CPU time {f['sft_vs_plain_lora_cpu_time']:.2f}x); same losses: {f['same_losses']} "
              f"(largest difference {f['largest_loss_difference']:.2g}); the default {f['default_steps']} steps "
              f"take ~{f['default_correct_seconds']:.0f} s here")
    targets = results["targets"]
    if targets:
        print(f"targets met: {sum(t['met'] for t in targets.values())} of {len(targets)}; not met: "
              + (", ".join(f"{name} {t['value']} (target {t['target']})" for name, t in targets.items() if not t["met"])
                 or "none"))
    print("seconds per part: " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items())
          + f"; total {sum(seconds.values()):.0f}")
    print(json.dumps(results))
