"""Endpoints for programs (gradio_client, REST): /compare streams a comparison as deltas (the event schema is in
:mod:`playground.stream`), /trace returns a finished one whole, /info says what is served, /export_code writes one
column's fix as code."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from ..export import export_column
from ..interventions import default_params
from ..service import RUNS_AT_ONCE, Playground
from ..space import normalize_columns
from ..stream import DeltaStream
from .errors import refusal

RAMP = default_params("eos_reward")
API_INTERVAL = 0.1  # seconds between /compare events while it runs: at most 10 a second, each with every new step


def api_endpoints(playground: Playground) -> None:
    def compare(prompt: str, columns: list | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
                top_p: float = 1.0, top_k: int = 0, seed: int = 0, reward_start_ratio: float = RAMP["reward_start_ratio"],
                strength: float = RAMP["strength"], stop_strings: str = "\\n\\n", min_new_tokens: int = 32,
                use_chat_template: bool = True, system_prompt: str = "") -> Iterator[dict]:
        """Stream a comparison. Each event carries, per column, only the steps and text added since the previous
        one and the column's status; the first also says what is decoded (model, prompt, settings, columns), the
        last ("done": true) each column's summary and a trace_id for /trace.

        columns: one list of intervention names per column (default: baseline and eos_reward, after the base
        model's baseline when an adapter is loaded); "@NAME" at a column's end, or {"model": NAME, "interventions":
        [...]}, picks its model ("base" or a loaded adapter).
        """
        try:
            columns = normalize_columns(columns) if columns is not None else playground.default_columns()
            comparison = playground.comparison(
                prompt, columns, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                seed=seed, reward_start_ratio=reward_start_ratio, strength=strength, stop_strings=stop_strings,
                min_new_tokens=min_new_tokens, use_chat_template=use_chat_template, system_prompt=system_prompt)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "/compare", error, page=False) from None
        yield from DeltaStream(comparison).events(playground.stream(comparison), API_INTERVAL, playground.keep_trace)

    # Runs share the model's decode loop (one batch, one forward pass per step for every visitor's rows): they do
    # not queue behind each other; /load_model and /doctor keep the "model" group and wait for rows in flight.
    gr.api(compare, api_name="compare", concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE)

    def trace(trace_id: str, stages: bool = False) -> dict:
        """A finished comparison's whole trace (the CLI's --json schema), by the trace_id of /compare's last
        event; stages=True adds the distribution after each stage of every step (large)."""
        try:
            return playground.trace(trace_id).to_dict(stages=bool(stages))
        except ValueError as error:
            raise gr.Error(str(error)) from None

    gr.api(trace, api_name="trace", queue=False)

    def info() -> dict:
        """The model being served, this app's limits, and how many comparisons are decoding right now."""
        return playground.info()

    gr.api(info, api_name="info", queue=False)


def export_endpoint(playground: Playground) -> None:
    def export_code(prompt: str, interventions: list | None = None, kind: str = "generate", max_new_tokens: int = 128,
                    temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                    reward_start_ratio: float = RAMP["reward_start_ratio"], strength: float = RAMP["strength"],
                    stop_strings: str = "\\n\\n", min_new_tokens: int = 32, use_chat_template: bool = True,
                    system_prompt: str = "") -> str:
        """The page's "Copy this fix" for one column: Python that needs only torch and transformers.

        interventions: the column's intervention names (none = baseline); kind: "generate" (a script), "pipeline"
        (a script) or "kwargs" (the arguments for your own generate() call). The other fields are /compare's.
        """
        try:
            [names] = normalize_columns([interventions])
            comparison = playground.comparison(
                prompt, [names], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                seed=seed, reward_start_ratio=reward_start_ratio, strength=strength, stop_strings=stop_strings,
                min_new_tokens=min_new_tokens, use_chat_template=use_chat_template, system_prompt=system_prompt)
            return export_column(comparison, kind=kind, model_reference=playground.reference)
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error)) from None

    gr.api(export_code, api_name="export_code", queue=False)
