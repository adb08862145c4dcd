"""Keep GNU OpenMP from putting the decode loop's threads to sleep after every matrix product.

Each thread that runs a parallel torch operation gets its own OpenMP team, and its worker threads stay alive
while that thread lives. GNU OpenMP (libgomp, which torch's Linux wheels bundle) counts every such worker; once
there are more of them than CPUs it stops letting idle workers spin and puts them to sleep after each parallel
region, to be woken by a system call at the next one. A decode step of the embedded model runs about 900
regions, so a single extra team — the caller's own, left by a ``generate()`` before it, or a web handler's —
cost the loop 18 % at 2 threads on a 2-core machine and base + LoRA adapter 70 % (130,000 sleeps for 144 steps,
against 160 without it).

So a thread hands its team back when it starts waiting on the decode loop (its next parallel operation builds a
new one, in well under a millisecond), and the loop hands back its own when it goes idle. Other OpenMP runtimes
(LLVM's, Intel's) pause every team of the process at once, which would stop the loop's; they are left alone.

    >>> import torch  # its Linux wheels load libgomp
    >>> release_thread_team()
    True
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: the threads end; the runtime keeps its settings


@functools.cache
def _pause_calling_thread():
    """libgomp's ``omp_pause_resource_all`` if torch loaded libgomp (it then frees only the calling thread's team),
    else None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1]
        if Path(path).name.startswith("libgomp") and Path(path).exists():
            pause = ctypes.CDLL(path).omp_pause_resource_all
            pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
            return pause
    return None


def release_thread_team() -> bool:
    """End the OpenMP worker threads the calling thread started, if torch runs on GNU OpenMP; True if it does."""
    pause = _pause_calling_thread()
    if pause is None:
        return False
    pause(OMP_PAUSE_SOFT)  # -1 inside a parallel region, where there is nothing to hand back
    return True
