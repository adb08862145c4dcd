"""The Fine-tune tab: pick a recipe (and optionally a data file), see one example as the recipe feeds it, name the
adapter, train with a live loss curve, stop keeping what was learned, then put the adapter beside the base in
Compare or diagnose it. The training belongs to the server: any page, reopened or new, shows it while it runs."""

from __future__ import annotations

import tempfile
import time
import urllib.parse
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from ..finetune.lab import Lab
from ..finetune.recipes import RECIPES
from ..finetune.train import SAMPLE_FILE
from ..markup import md_code, md_text
from ..models import BASE, ModelLoadError
from ..service import TRACE_MAX_AGE, Playground, write_downloads
from ..supervision import STYLE, to_html, tokens_of
from .doctor_tab import DoctorTab, model_choices
from .errors import CHECK_INPUT, from_page, refusal

FOLLOW_SECONDS = 0.5  # how often a page following the training reads its progress


def loss_figure(losses: list[tuple[int, float]]) -> go.Figure:
    figure = go.Figure(go.Scatter(x=[s for s, _ in losses], y=[loss for _, loss in losses], mode="lines+markers",
                                  name="loss"))
    figure.update_layout(height=240, margin=dict(l=40, r=10, t=10, b=30), xaxis_title="step", yaxis_title="loss")
    return figure


def preview_html(lab: Lab, recipe_name: str, data_file=None) -> tuple[str, str]:
    """The recipe in one line, and its first example as the shared supervision view draws it."""
    ids, labels, ends = lab.preview(recipe_name, data_file)
    tokens = tokens_of(lab.playground.bundle.tokenizer, ids, labels, ends)
    return (f"**{md_text(recipe_name)}**: {md_text(RECIPES[recipe_name].description)}.",
            f"<style>{STYLE}</style>{to_html(tokens)}")


def compare_query(name: str) -> str:
    """The Compare page's link query for the base beside the adapter ``name``: ``baseline@base | baseline@NAME``."""
    return urllib.parse.urlencode({"columns": 2, "c1": f"baseline@{BASE}", "c2": f"baseline@{name}"})


def status_markdown(lab: Lab) -> str:
    """The last training as a page shows it: its progress, then where its adapter is and what to do next."""
    job = lab.job
    if job is None:
        return ""
    progress = job.snapshot()
    if job.error is not None:
        return f"{progress.line()}\n\n**Training failed:** {lab.playground.user_message(job.error)}"
    if not progress.done:
        return (f"Training **{md_text(lab.name)}** ({md_text(job.config.recipe)}): {progress.line()}"
                + (" — stopping after this step; what it learned is written" if job.stopping else ""))
    where = md_code(progress.adapter) if lab.playground.policy.reveal_paths else "a folder on the server"
    return (f"Adapter **{md_text(lab.name)}** ({md_text(job.config.recipe)}): {progress.line()}\n\n"
            f"Written to {where} with its card (`finetune.json`, `README.md`) and the examples as trained "
            f"(`{SAMPLE_FILE}`). **Compare with the base** puts it beside the base model "
            f"({md_code('@' + BASE)} | {md_code('@' + lab.name)}); **Diagnose** runs the EOS doctor on it with those "
            "examples.")


def finetune_tab(playground: Playground, demo: gr.Blocks | None = None, tabs: gr.Tabs | None = None,
                 doctor: DoctorTab | None = None) -> None:
    lab = Lab(playground)
    steps_cap = playground.policy.finetune_max_steps
    off = playground.policy.public and steps_cap is None
    with gr.Tab("Fine-tune"):
        gr.Markdown("Train a LoRA adapter on the loaded model with TRL's SFTTrainer — the right way, or with one of "
                    "the bugs that make a fine-tune lose EOS. The preview shows what the recipe feeds the model: "
                    "green tokens are supervised, end tokens are badged. The training runs on the server: close "
                    "the page and come back, it is still here."
                    + ("\n\n**Training is switched off on this app** (caps.finetune_max_steps in spaces.yaml)."
                       if off else ""))
        with gr.Row():
            recipe = gr.Dropdown(list(RECIPES), value="correct", label="Recipe", elem_id="finetune-recipe")
            name = gr.Textbox("", placeholder="correct", label="Adapter name (its folder, and @NAME in a column; "
                              "empty: the recipe's)", max_lines=1, elem_id="finetune-name")
            steps = gr.Number(value=min(40, steps_cap or 40), precision=0, minimum=1, maximum=steps_cap,
                              label="Steps", elem_id="finetune-steps")
        data = gr.File(label="Data (JSONL prompt/response, messages or text; CSV) — empty: built-in set",
                       file_types=[".jsonl", ".csv"], height=140)
        first = preview_html(lab, "correct")
        description = gr.Markdown(first[0])
        preview = gr.HTML(first[1], elem_id="finetune-preview")
        with gr.Row():
            train = gr.Button("Train", variant="primary", interactive=not off, elem_id="finetune-train")
            stop = gr.Button("Stop (writes what it learned)", elem_id="finetune-stop")
        status = gr.Markdown(elem_id="finetune-status")
        with gr.Row(visible=False) as next_steps:
            compare = gr.Button("Compare with the base", elem_id="finetune-compare")
            diagnose = gr.Button("Diagnose", elem_id="finetune-diagnose")
        query = gr.Textbox(visible=False)  # the Compare link's query, for the page to open
        chart = gr.Plot(label="loss")

    def on_preview(recipe_name, data_file, event: gr.EventData):
        try:
            return preview_html(lab, recipe_name, data_file)
        except (OSError, ValueError) as error:
            raise refusal(playground, "/finetune_preview", error, page=from_page(event)) from None

    def on_recipe_name(recipe_name):
        """An empty name is the recipe's: the box says which."""
        return gr.update(placeholder=recipe_name)

    def view() -> tuple:
        job = lab.job
        done = job is not None and job.progress.done
        return (status_markdown(lab), loss_figure(job.progress.losses) if job is not None else None,
                gr.update(visible=done))

    def follow():
        """The last training's state as it changes, until it has ended (read every FOLLOW_SECONDS)."""
        job, seen = lab.job, None
        while job is not None:
            now = (job.progress.step, job.progress.done, job.running, job.stopping, job.error is not None)
            if now != seen:
                seen = now
                yield view()
            if not job.running:
                return
            time.sleep(FOLLOW_SECONDS)
        yield view()

    def on_train(recipe_name, data_file, n_steps, adapter_name=None, event: gr.EventData = None):
        try:
            lab.start(recipe_name, data_file, n_steps, adapter_name)
        except (OSError, ValueError) as error:
            busy = lab.job is not None and lab.job.running
            raise refusal(playground, "/finetune", error, title="A training is running" if busy else CHECK_INPUT,
                          page=from_page(event)) from None
        for status_text, figure, _ in follow():
            yield status_text, figure

    def on_stop():
        return ("Stopping after this step; what it learned so far is written." if lab.stop()
                else "Nothing is training.")

    def served(endpoint: str, event) -> str:
        try:
            return lab.serve()
        except (ModelLoadError, ValueError) as error:
            raise refusal(playground, endpoint, error, page=from_page(event)) from None

    def on_compare(event: gr.EventData):
        return compare_query(served("Compare with the base", event))

    def on_diagnose(event: gr.EventData):
        """Open the Doctor tab on the adapter, with the examples it was trained on as the sample."""
        adapter = served("Diagnose", event)
        sample = Path(lab.job.progress.adapter) / SAMPLE_FILE
        copy = write_downloads({SAMPLE_FILE: sample.read_text(encoding="utf-8")}, "finetune-sample-",
                               Path(tempfile.gettempdir()) / "eos-playground-samples", TRACE_MAX_AGE)[0]
        return (gr.Tabs(selected="doctor"), gr.update(choices=model_choices(playground), value=f"@{adapter}"),
                copy)

    recipe.change(on_recipe_name, recipe, name, queue=False, api_visibility="private")
    for trigger in (recipe.change, data.change):
        trigger(on_preview, [recipe, data], [description, preview], api_visibility="private")  # the page's own
    train.click(on_train, [recipe, data, steps, name], [status, chart], concurrency_id="finetune",
                concurrency_limit=1, api_name="finetune").then(
        view, None, [status, chart, next_steps], queue=False, api_visibility="private")
    # Then the page follows the training to its end itself: Stop's sentence may reach the page after the last word
    # of a follow already running (once in CI), and a page opened before the training started follows none.
    stop.click(on_stop, None, status, api_name="finetune_stop").then(
        follow, None, [status, chart, next_steps], concurrency_id="finetune_follow", concurrency_limit=None,
        api_visibility="private")
    # A page opened (or reopened) while a training runs follows it; one opened after shows how it ended.
    if demo is not None:
        demo.load(follow, None, [status, chart, next_steps], concurrency_id="finetune_follow",
                  concurrency_limit=None, api_visibility="private")
    compare.click(on_compare, None, query, concurrency_id="model", concurrency_limit=1,
                  api_visibility="private").success(
        None, query, None, js="(query) => { location.href = location.pathname + '?' + query; }")
    if tabs is not None and doctor is not None:
        diagnose.click(on_diagnose, None, [tabs, doctor.model, doctor.sample], concurrency_id="model",
                       concurrency_limit=1, api_visibility="private").success(
            doctor.examine, [doctor.sample, doctor.model], doctor.report, concurrency_id="model",
            concurrency_limit=1, api_visibility="private")
