"""A running comparison as a stream of events that carry only what is new, like the token streams of the usual
LLM APIs (one chunk per token, with its logprobs): bytes grow with the length of the run, not its square.

Every event is a dict (JSON on the wire), its columns keyed by their (unique) names, in column order::

    {"done": false,
     "columns": {"baseline": {"steps": [...],     # the steps added since the previous event (StepRecord.to_dict())
                              "text_from": 120,   # the column's text is now text[:text_from] + "text"
                              "text": " and then",
                              "status": "running · 31 tokens"},
                 ...}}

Keyed by name rather than listed: Gradio sends a generator's successive values to gradio_client and the page as
edits against the previous value, and its list diff mis-numbers deletions when several sibling lists shrink
(``gradio.utils.diff``), which a list of columns whose step lists grow and shrink from event to event triggers.

The first event also carries ``model``, ``prompt``, ``settings`` and, per column, ``interventions``,
``prompt_tokens``, ``branch_of``, ``model``, ``model_note`` and ``shared_forward``. The last event has ``"done": true``, no steps, per column a ``summary`` (stop reason and
detail, generated tokens, speed, the step where it diverges from the first column) and a ``trace_id`` for the
whole trace (``/trace``). Applying an event twice changes nothing, so a client that gets the last one twice (the
REST stream repeats it as its ``complete`` event) is fine. :class:`TraceBuilder` rebuilds the trace.

    stream = DeltaStream(comparison)
    builder = TraceBuilder()
    for event in stream.events():                          # start, updates as rows advance, finish
        builder.apply(event)
    assert builder.trace == comparison.trace.to_dict()
"""

from __future__ import annotations

from .engine import Comparison, SplitComparison


class DeltaStream:
    """Builds the events of one comparison; remembers what each column has already sent."""

    def __init__(self, comparison: Comparison | SplitComparison):
        self.comparison = comparison
        count = len(comparison.trace.variants)
        self._steps_sent, self._text_sent, self._status_sent = [0] * count, [""] * count, [""] * count

    def start(self) -> dict:
        """The first event: what is being decoded, before any step."""
        trace = self.comparison.trace
        event = self.update(force=True)
        event.update(model=trace.model, prompt=trace.prompt, settings=dict(trace.settings))
        for column, variant in zip(event["columns"].values(), trace.variants):
            column.update(interventions=variant.interventions, prompt_tokens=variant.prompt_tokens,
                          branch_of=variant.to_dict()["branch_of"], model=variant.model, model_note=variant.model_note,
                          shared_forward=variant.shared_forward)
        return event

    def update(self, force: bool = False) -> dict | None:
        """The steps and text added since the last event, and each column's status; None if nothing is new."""
        with self.comparison.lock:  # every column at the same step, no half-recorded step; copied, then built
            taken = [(variant.name, variant.steps[self._steps_sent[index]:], variant.text, variant.status())
                     for index, variant in enumerate(self.comparison.trace.variants)]
        columns, new = {}, force
        for index, (name, steps, text, status) in enumerate(taken):
            sent = self._text_sent[index]
            start = len(sent) if text.startswith(sent) else _common_prefix(sent, text)
            self._steps_sent[index] += len(steps)
            self._text_sent[index] = text
            new = new or bool(steps) or start < len(text) or start < len(sent) or status != self._status_sent[index]
            self._status_sent[index] = status
            columns[name] = {"steps": [s.to_dict() for s in steps], "text_from": start, "text": text[start:],
                             "status": status}
        return {"done": False, "columns": columns} if new else None

    def updates(self, traces):
        """An update whenever ``traces`` (a ``comparison.run()``, or its stream paced for a client:
        :func:`playground.ui.streaming.paced`) yields and something is new, then whatever the last one did not
        carry yet."""
        try:
            for _ in traces:
                event = self.update()
                if event is not None:
                    yield event
        finally:  # a consumer that stops reading (a cancelled request) stops the decode
            getattr(traces, "close", lambda: None)()
        event = self.update()
        if event is not None:
            yield event

    def finish(self, trace_id: str | None = None) -> dict:
        """The last event, once the comparison is done: each column's summary (and, after :meth:`updates`, no
        steps: they all went out before)."""
        event = self.update(force=True)
        event["done"] = True
        for column, variant in zip(event["columns"].values(), self.comparison.trace.variants):
            column["summary"] = variant.summary()
        if trace_id is not None:
            event["trace_id"] = trace_id
        return event

    def events(self, traces=None, trace_id=None):
        """Every event of the comparison: :meth:`start`, :meth:`updates`, :meth:`finish`. ``traces`` defaults to
        ``comparison.run()``; ``trace_id(trace)`` names the finished trace for the last event."""
        yield self.start()
        yield from self.updates(self.comparison.run() if traces is None else traces)
        yield self.finish(trace_id(self.comparison.trace) if trace_id else None)


def _common_prefix(a: str, b: str) -> int:
    size = 0
    for x, y in zip(a, b):
        if x != y:
            break
        size += 1
    return size


class TraceBuilder:
    """Rebuilds, from the events, the trace as :meth:`Trace.to_dict` gives it (the CLI's ``--json`` schema)."""

    def __init__(self):
        self.trace: dict | None = None
        self.done = False

    def apply(self, event: dict) -> None:
        if "model" in event:
            self.trace = {"model": event["model"], "prompt": event["prompt"], "settings": event["settings"],
                          "variants": [{"name": name, "model": c.get("model", "base"), "model_note": c.get("model_note"),
                                        "shared_forward": c.get("shared_forward", True),
                                        "interventions": c["interventions"],
                                        "prompt_tokens": c["prompt_tokens"], "branch_of": c["branch_of"],
                                        "text": "", "token_ids": [],
                                        "stop_reason": None, "stop_detail": None, "steps": [], "summary": None}
                                       for name, c in event["columns"].items()]}
        for variant in self.trace["variants"]:
            column = event["columns"][variant["name"]]
            known = len(variant["steps"])
            new = [step for step in column["steps"] if step["step"] >= known]  # a repeated event adds nothing
            variant["steps"] += new
            variant["token_ids"] += [step["token_id"] for step in new]
            variant["text"] = variant["text"][:column["text_from"]] + column["text"]
            if "summary" in column:
                variant["summary"] = column["summary"]
                variant["stop_reason"], variant["stop_detail"] = column["summary"]["stop_reason"], column["summary"]["stop_detail"]
        self.done = self.done or event["done"]
