"""How a run reaches its client, the one way every handler uses: the run's stream paced (:func:`paced`), each
column's new steps turned into the page's appends (:class:`PageColumns`), and work without a stream of its own
kept stoppable (:func:`until_closed`).

A client that leaves stops the work it asked for. Gradio runs a generator handler step by step and closes it at
its next ``yield`` when the client goes (a page closed, ``gradio_client``'s ``job.cancel()``); closing
:func:`paced` closes the run's stream, which cancels the decode. A plain function cannot be closed, so work that
yields nothing for seconds (the doctor's checks) runs through :func:`until_closed`, whose generator yields while
the work runs and, when closed, sets the work's cancel event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import TypeVar

from ..views import column_delta, status_markdown

T = TypeVar("T")

# Seconds between streamed page updates (the decode does not wait for them). Each update costs the browser a
# redraw, and on 2 cores the browser's work slows the decode: bench measured the page at 0.76 of the engine's
# speed with 0.15 s, 0.86-0.89 with 0.3 s (about three updates a second, a few tokens each).
PAGE_INTERVAL = 0.3
API_INTERVAL = 0.1  # /compare: at most 10 events a second, each with every new step
PROGRESS_INTERVAL = 0.5  # an evaluation's progress (rows done), on the page and over the API
# How often a handler running work in the background yields, so that Gradio can close it when its client leaves.
HEARTBEAT = 0.25


def paced(stream: Iterable[T], interval: float, final: Callable[[T], bool] = lambda item: False) -> Iterator[T]:
    """The items of a run's ``stream``, at most one every ``interval`` seconds (the latest: a skipped item's steps
    travel with the next one, and the run does not wait), the first and every ``final`` one at once. Closing it
    (Gradio does when the client leaves) closes ``stream``, which stops the run.

    >>> list(paced(iter(range(5)), 3600, final=lambda n: n == 4))
    [0, 4]
    """
    last = None
    try:
        for item in stream:
            now = time.monotonic()
            if last is None or now - last >= interval or final(item):
                last = now
                yield item
    finally:
        getattr(stream, "close", lambda: None)()


class PageColumns:
    """What the page already has of a running trace's ``columns`` (their indices): each column's token view and
    status line, and the chart's text. :meth:`advance` appends what is new, so a column's view and the chart only
    grow while it runs and Gradio sends each update as the appended part."""

    def __init__(self, chart: str, columns: Iterable[int]):
        self.chart = chart
        self.tokens = {i: "" for i in columns}
        self.status = {i: "" for i in self.tokens}
        self._steps = {i: 0 for i in self.tokens}  # steps drawn
        self._ended = {i: False for i in self.tokens}  # the stop drawn

    def advance(self, trace, lock=None) -> list[int]:
        """Append each column's steps since the last call; the columns that changed (their steps, their stop or
        their status line, which also changes while a run waits for memory). Under the run's ``lock``: every
        column at the same step, never a half-recorded one (held while reading, never across a yield)."""
        changed = []
        with lock or nullcontext():
            for i in self.tokens:
                variant = trace.variants[i]
                line = status_markdown(variant)
                if len(variant.steps) == self._steps[i] and variant.finished == self._ended[i] and line == self.status[i]:
                    continue
                spans, points = column_delta(variant, i, self._steps[i], self._ended[i])
                self.tokens[i] += spans
                self.chart += points
                self._steps[i], self._ended[i], self.status[i] = len(variant.steps), variant.finished, line
                changed.append(i)
        return changed


def until_closed(work: Callable[[threading.Event], T], beat: Callable[[], object] = lambda: None,
                 heartbeat: float = HEARTBEAT):
    """Run ``work(cancel)`` in a thread and, while it runs, yield ``beat()`` every ``heartbeat`` seconds (a
    handler's no-change update, its progress); return the work's result, or raise its error, as the generator's
    value. Closed before the work ends (its client left), it sets ``cancel``: the work checks it between its steps
    and stops; its thread is not waited for (Gradio closes handlers on its event loop).

    >>> def handler():
    ...     answer = yield from until_closed(lambda cancel: 6 * 7, heartbeat=0.01)
    ...     yield answer
    >>> [*handler()][-1]
    42
    """
    cancel, outcome = threading.Event(), {}

    def target():
        try:
            outcome["value"] = work(cancel)
        except BaseException as error:  # handed to the handler's thread, raised there
            outcome["error"] = error

    thread = threading.Thread(target=target, name="until-closed", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(heartbeat)
            if thread.is_alive():
                yield beat()
    finally:
        if thread.is_alive():
            cancel.set()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
