"""The Fine-tune tab: pick a recipe (and optionally a data file), see one example as the recipe feeds it, train
with a live loss curve, stop keeping what was learned, and get the adapter's folder to load as a column."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from ..finetune.lab import Lab
from ..finetune.recipes import RECIPES
from ..service import Playground
from ..supervision import STYLE, to_html, tokens_of
from .errors import from_page, refusal


def loss_figure(losses: list[tuple[int, float]]) -> go.Figure:
    figure = go.Figure(go.Scatter(x=[s for s, _ in losses], y=[loss for _, loss in losses], mode="lines+markers",
                                  name="loss"))
    figure.update_layout(height=240, margin=dict(l=40, r=10, t=10, b=30), xaxis_title="step", yaxis_title="loss")
    return figure


def preview_html(lab: Lab, recipe_name: str, data_file=None) -> tuple[str, str]:
    """The recipe in one line, and its first example as the shared supervision view draws it."""
    ids, labels, ends = lab.preview(recipe_name, data_file)
    tokens = tokens_of(lab.playground.bundle.tokenizer, ids, labels, ends)
    return f"**{recipe_name}**: {RECIPES[recipe_name].description}.", f"<style>{STYLE}</style>{to_html(tokens)}"


def finetune_tab(playground: Playground) -> None:
    lab = Lab(playground)
    steps_cap = playground.policy.finetune_max_steps
    off = playground.policy.public and steps_cap is None
    with gr.Tab("Fine-tune"):
        gr.Markdown("Train a LoRA adapter on the loaded model with TRL's SFTTrainer — the right way, or with one of "
                    "the bugs that make a fine-tune lose EOS. The preview shows what the recipe feeds the model: "
                    "green tokens are supervised, end tokens are badged."
                    + ("\n\n**Training is switched off on this app** (caps.finetune_max_steps in spaces.yaml)."
                       if off else ""))
        with gr.Row():
            recipe = gr.Dropdown(list(RECIPES), value="correct", label="Recipe")
            steps = gr.Number(value=min(40, steps_cap or 40), precision=0, minimum=1, maximum=steps_cap,
                              label="Steps")
            data = gr.File(label="Data (JSONL prompt/response, messages or text; CSV) — empty: built-in set",
                           file_types=[".jsonl", ".csv"], height=100)
        first = preview_html(lab, "correct")
        description = gr.Markdown(first[0])
        preview = gr.HTML(first[1], elem_id="finetune-preview")
        with gr.Row():
            train = gr.Button("Train", variant="primary", interactive=not off)
            stop = gr.Button("Stop (keeps the adapter)")
        status = gr.Markdown(elem_id="finetune-status")
        chart = gr.Plot(label="loss")

    def on_preview(recipe_name, data_file, event: gr.EventData):
        try:
            return preview_html(lab, recipe_name, data_file)
        except (OSError, ValueError) as error:
            raise refusal(playground, "/finetune_preview", error, page=from_page(event)) from None

    def on_train(recipe_name, data_file, n_steps, event: gr.EventData):
        try:
            job = lab.start(recipe_name, data_file, n_steps)
        except (OSError, ValueError) as error:
            raise refusal(playground, "/finetune", error, page=from_page(event)) from None
        yield "Loading a copy of the model for training…", None
        for progress in job.run():
            done = ""
            if progress.done:
                where = progress.adapter if playground.policy.reveal_paths else "a folder on the server"
                done = (f"\n\nAdapter written to `{where}` with its card (finetune.json). Load it in the Model "
                        f"panel as the adapter, or `python -m playground evaluate --adapter {where}`.")
            yield progress.line() + done, loss_figure(progress.losses)

    def on_stop():
        return "Stopping after this step; the adapter trained so far is kept." if lab.stop() else "Nothing is training."

    for trigger in (recipe.change, data.change):
        trigger(on_preview, [recipe, data], [description, preview], api_visibility="private")  # the page's own
    train.click(on_train, [recipe, data, steps], [status, chart], concurrency_id="finetune", concurrency_limit=1,
                api_name="finetune")
    stop.click(on_stop, None, status, api_name="finetune_stop")

