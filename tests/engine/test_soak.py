"""Is the server's resident memory growth over many short runs (issue 25: ~0.2 MB a run) a leak? A soak of 1000
runs through what /compare does (validate, decode in the shared loop, stream deltas, keep the trace), with
tracemalloc snapshots of the Python heap and the resident set size (RSS) sampled along the way.

It tells the two causes apart: a leak of Python objects (a trace, a cache entry per run) shows as a Python heap
that keeps growing, with the line that allocates it printed; memory that glibc's allocator keeps after torch
frees it shows as RSS that ``malloc_trim(0)`` hands back. Asserted: the Python heap of the second half of the
soak grows under 1 MB, and after a trim RSS is within 40 MB of where it was after the warm-up (the kept traces,
TRACES_KEPT of them, fill up during the warm-up). PLAYGROUND_SOAK_RUNS=200 gives a quicker look.
"""

from __future__ import annotations

import ctypes
import gc
import os
import tracemalloc

import pytest

from playground.service import TRACES_KEPT, Playground
from playground.stream import DeltaStream
from playground.ui.streaming import API_INTERVAL, paced

RUNS = int(os.environ.get("PLAYGROUND_SOAK_RUNS", "1000"))  # fewer for a quick look
PROMPTS = ["What can I do in Paris?", "Write a haiku about the sea.", "Name three colours.", "Say hi."]


def resident_mb() -> float:
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def malloc_trim() -> bool:
    """Ask glibc to return its free arena memory to the system (False where there is no glibc)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0)) or True
    except (OSError, AttributeError):
        return False


def one_run(playground: Playground, i: int) -> None:
    comparison = playground.comparison(f"{PROMPTS[i % 4]} ({i})", [[], ["eos_reward"]], max_new_tokens=6,
                                       temperature=0.7, top_p=1.0, top_k=0, seed=i, reward_start_ratio=0.5,
                                       strength=12)
    traces = paced(playground.stream(comparison), API_INTERVAL, final=lambda trace: comparison.done)
    events = list(DeltaStream(comparison).events(traces, playground.keep_trace))  # as /compare streams it
    assert events[-1]["done"]


@pytest.mark.slow  # 1000 runs: several minutes on 2 cores
def test_a_thousand_runs_plateau(smollm, capsys):
    playground = Playground(smollm)
    for i in range(TRACES_KEPT + 8):  # warm-up: first-call allocations and the kept traces filling up
        one_run(playground, i)
    gc.collect()
    tracemalloc.start(1)  # one frame a block: enough to name the line, and cheap
    first = tracemalloc.take_snapshot()
    rss = [resident_mb()]
    heap = [tracemalloc.get_traced_memory()[0] / 2**20]
    for i in range(RUNS):
        one_run(playground, 1000 + i)
        if (i + 1) % (RUNS // 10) == 0:
            gc.collect()
            rss.append(resident_mb())
            heap.append(tracemalloc.get_traced_memory()[0] / 2**20)
            with capsys.disabled():
                print(f"run {i + 1}: RSS {rss[-1]:.1f} MB, Python heap {heap[-1]:.2f} MB", flush=True)
    last = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = last.compare_to(first, "traceback")[:5]
    trimmed = malloc_trim()
    after_trim = resident_mb()
    with capsys.disabled():
        print(f"\nRSS every {RUNS // 10} runs (MB):", " ".join(f"{v:.0f}" for v in rss))
        print(f"Python heap every {RUNS // 10} runs (MB):", " ".join(f"{v:.2f}" for v in heap))
        print(f"RSS after malloc_trim(0): {after_trim:.0f} MB (trim available: {trimmed})")
        for stat in top:
            print(f"  {stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks at "
                  f"{stat.traceback.format()[-1].strip() if stat.traceback else '?'}")
    # The Python heap: the second half of the soak adds under 1 MB (a leak of one trace per run would add ~10).
    assert heap[-1] - heap[5] < 1.0, heap
    # RSS: what grows is the allocator's free memory, handed back by a trim.
    if trimmed:
        assert after_trim - rss[0] < 40, (rss, after_trim)
