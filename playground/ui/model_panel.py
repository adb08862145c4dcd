"""The Model panel: what is loaded, and loading another model without a restart (a failed load keeps the
current one)."""

from __future__ import annotations

import gradio as gr

from ..models import ModelLoadError
from ..service import Playground
from .errors import MODEL_NOT_LOADED, from_page, refusal


def model_panel(playground: Playground) -> None:
    policy = playground.policy
    with gr.Accordion(playground.model_label(), open=False) as panel:
        model_info = gr.Markdown(playground.model_markdown())
        with gr.Row(visible=policy.model_swap):  # without swaps, the panel only says what is served
            if policy.allowed_models is None:
                model_ref = gr.Textbox(label="Load another model", placeholder="hub id, local directory, .gguf file or 'default'", scale=3)
            else:  # public: only the allowlist (anything else sent to /load_model is refused with a sentence)
                shown = playground.reference if playground.reference in policy.allowed_models else None
                model_ref = gr.Dropdown(list(policy.allowed_models), value=shown,
                                        allow_custom_value=True, label="Load another model", scale=3)
            adapter_ref = gr.Textbox(label="LoRA adapter (optional)", scale=2, visible=policy.allow_adapters)
            trust_code = gr.Checkbox(label="Trust remote code (runs the model's own Python code)", value=False,
                                     visible=policy.allow_trust_remote_code, scale=1)
            load_button = gr.Button("Load", scale=1)
        with gr.Row(visible=policy.allow_adapters):
            adapter_add = gr.Textbox(label="Add a LoRA adapter on this base (NAME=PATH, or a path named after its "
                                           "folder); a column then picks @base or @NAME", scale=3, elem_id="adapter-add")
            add_button = gr.Button("Add adapter", scale=1, elem_id="adapter-add-button")
            adapter_remove = gr.Dropdown(list(playground.bundle.adapters), value=None, label="Loaded adapters", scale=2,
                                         elem_id="adapter-remove")
            remove_button = gr.Button("Remove adapter", scale=1)

    def on_load(reference, adapter, trust_remote_code, event: gr.EventData):
        try:
            playground.load(reference, adapter, trust_remote_code)
        except (ModelLoadError, ValueError) as error:
            raise refusal(playground, "/load_model", error, title=MODEL_NOT_LOADED, page=from_page(event)) from None
        return playground.model_markdown()

    def on_add(spec, event: gr.EventData):
        try:
            playground.add_adapter(spec)
        except (ModelLoadError, ValueError) as error:
            raise refusal(playground, "/add_adapter", error, title=MODEL_NOT_LOADED, page=from_page(event)) from None
        return playground.model_markdown(), gr.update(choices=list(playground.bundle.adapters))

    def on_remove(name, event: gr.EventData):
        try:
            playground.remove_adapter(name)
        except ValueError as error:
            raise refusal(playground, "/remove_adapter", error, page=from_page(event)) from None
        return playground.model_markdown(), gr.update(choices=list(playground.bundle.adapters), value=None)

    add_button.click(on_add, adapter_add, [model_info, adapter_remove], concurrency_id="model", concurrency_limit=1,
                     api_name="add_adapter")
    remove_button.click(on_remove, adapter_remove, [model_info, adapter_remove], concurrency_id="model",
                        concurrency_limit=1, api_name="remove_adapter")
    load_button.click(on_load, [model_ref, adapter_ref, trust_code], model_info, concurrency_id="model",
                      concurrency_limit=1, api_name="load_model").success(
        lambda: gr.update(label=playground.model_label()), None, panel, api_visibility="private", queue=False)
