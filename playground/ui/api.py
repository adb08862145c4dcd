"""Endpoints for programs (gradio_client, REST): /compare streams a comparison, /info says what is served,
/export_code writes one column's fix as code."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gradio as gr

from ..export import export_column
from ..interventions import default_params
from ..service import Playground
from ..space import normalize_columns
from .errors import refusal

RAMP = default_params("eos_reward")
API_INTERVAL = 0.25  # seconds between /compare updates (each carries the whole trace so far)


def api_endpoints(playground: Playground) -> None:
    def compare(prompt: str, columns: list | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
                top_p: float = 1.0, top_k: int = 0, seed: int = 0, reward_start_ratio: float = RAMP["reward_start_ratio"],
                strength: float = RAMP["strength"], stop_strings: str = "\\n\\n", min_new_tokens: int = 32,
                use_chat_template: bool = True, system_prompt: str = "") -> Iterator[dict]:
        """Stream a comparison: the CLI's --json object plus each column's text and status, after every step.

        columns: one list of intervention names per column (default: baseline and eos_reward).
        """
        try:
            columns = normalize_columns(columns)
            comparison = playground.comparison(
                prompt, columns, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                seed=seed, reward_start_ratio=reward_start_ratio, strength=strength, stop_strings=stop_strings,
                min_new_tokens=min_new_tokens, use_chat_template=use_chat_template, system_prompt=system_prompt)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "/compare", error, page=False) from None
        last = 0.0
        for trace in playground.stream(comparison):
            done = all(v.finished for v in trace.variants)
            # Each update is the whole trace so far; at most API_INTERVAL apart keeps a fast model's stream
            # from spending its time re-sending the same steps.
            if not done and time.monotonic() - last < API_INTERVAL:
                continue
            last = time.monotonic()
            data = trace.to_dict()
            data["texts"] = [v.text for v in trace.variants]
            data["statuses"] = [v.status() for v in trace.variants]
            data["done"] = done
            yield data

    gr.api(compare, api_name="compare", concurrency_id="model", concurrency_limit=1)

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
