"""The Model panel: what is loaded, and loading another model without a restart (a failed load keeps the
current one)."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..markup import md_code, md_text
from ..models import ModelLoadError
from ..service import Playground
from .errors import MODEL_NOT_LOADED, from_page, not_added, refusal


def model_panel(playground: Playground) -> None:
    policy = playground.policy
    with gr.Accordion(model_label(playground), open=False) as panel:
        model_info = gr.Markdown(model_markdown(playground))
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
        named_models_row(playground, model_info, "adapter", "Add a LoRA adapter on this base (NAME=PATH, or a path named "
                         "after its folder); a column then picks @base or @NAME", policy.allow_adapters,
                         playground.add_adapter, playground.remove_adapter, lambda: playground.bundle.adapters)
        named_models_row(playground, model_info, "checkpoint", "Add a second checkpoint with this model's tokenizer "
                         "(NAME=PATH, or a path named after its folder); a column then picks @NAME and decodes on it "
                         "in its own loop, its forward passes not shared", policy.allow_checkpoints,
                         playground.add_checkpoint, playground.remove_checkpoint, lambda: playground.bundle.checkpoints)

    def on_load(model, adapter, trust_remote_code, event: gr.EventData):  # "model": the field its sentences name
        try:
            playground.load(model, adapter, trust_remote_code)
        except (ModelLoadError, ValueError) as error:
            raise refusal(playground, "/load_model", error, title=MODEL_NOT_LOADED, page=from_page(event)) from None
        return model_markdown(playground)

    load_button.click(on_load, [model_ref, adapter_ref, trust_code], model_info, concurrency_id="model",
                      concurrency_limit=1, api_name="load_model").success(
        lambda: gr.update(label=model_label(playground)), None, panel, api_visibility="private", queue=False)


def named_models_row(playground: Playground, model_info: gr.Markdown, kind: str, label: str, visible: bool,
                     add: Callable[[str], dict], remove: Callable[[str], dict], named: Callable[[], dict]) -> None:
    """A row that adds (``add(spec)``) or removes (``remove(name)``) a named column model of ``kind`` — "adapter"
    (a LoRA on the loaded base) or "checkpoint" (a second full model); ``named()`` gives the loaded ones. Also
    served as the /add_<kind> and /remove_<kind> endpoints."""

    def loaded() -> list[str]:
        return list(named())

    with gr.Row(visible=visible):
        spec_box = gr.Textbox(label=label, scale=3, elem_id=f"{kind}-add")
        add_button = gr.Button(f"Add {kind}", scale=1, elem_id=f"{kind}-add-button")
        # Any name is sent on (the service refuses one not loaded): the choices are the ones loaded when the page
        # was drawn, and a program may remove one added since (over the API or from another page).
        remove_choice = gr.Dropdown(loaded(), value=None, label=f"Loaded {kind}s", scale=2, elem_id=f"{kind}-remove",
                                    allow_custom_value=True)
        remove_button = gr.Button(f"Remove {kind}", scale=1)

    def on_add(spec, event: gr.EventData):
        try:
            add(spec)
        except (ModelLoadError, ValueError) as error:
            raise refusal(playground, f"/add_{kind}", error, title=not_added(kind), page=from_page(event)) from None
        return model_markdown(playground), gr.update(choices=loaded())

    def on_remove(name, event: gr.EventData):
        try:
            remove(name)
        except ValueError as error:
            raise refusal(playground, f"/remove_{kind}", error, page=from_page(event)) from None
        return model_markdown(playground), gr.update(choices=loaded(), value=None)

    add_button.click(on_add, spec_box, [model_info, remove_choice], concurrency_id="model", concurrency_limit=1,
                     api_name=f"add_{kind}")
    remove_button.click(on_remove, remove_choice, [model_info, remove_choice], concurrency_id="model",
                        concurrency_limit=1, api_name=f"remove_{kind}")


def model_label(playground: Playground) -> str:
    """The Model panel's title: what is loaded, at a glance."""
    i = playground.bundle.info
    return f"Model: {i.name} · {i.num_parameters / 1e6:.0f} M parameters · {i.dtype} on {i.device}"


def model_markdown(playground: Playground) -> str:
    """The Model panel: the loaded model, its end tokens, adapters and checkpoints (their paths only where the
    policy reveals paths), every name as text."""
    i, reveal = playground.bundle.info, playground.policy.reveal_paths
    tokenizer = playground.bundle.tokenizer
    eos = ", ".join(f"`{t}` {md_code(repr(tokenizer.convert_ids_to_tokens(t)))}" for t in i.eos_token_ids)
    source = i.source if reveal else i.origin
    return (f"**{md_text(i.name)}** · {i.num_parameters / 1e6:.1f} M parameters · {i.dtype} on {i.device} · "
            f"context {i.context_length} · EOS ids {eos} · pad id `{i.pad_token_id}` · "
            f"chat template {'yes' if i.has_chat_template else 'no'}"
            + "".join(f" · {kind} **{md_text(name)}**" + (f" {md_code(path)}" if reveal else "")
                      for kind, named in (("adapter", i.adapters), ("checkpoint", i.checkpoints))
                      for name, path in named.items())
            + (" — a column picks `@base` or `@NAME`" if i.adapters or i.checkpoints else "")
            + (" (a checkpoint's columns decode in its own loop: their forward passes are not shared)"
               if i.checkpoints else "")
            + f"  \n<small>from {md_text(source)}, loaded in {i.load_seconds:.1f} s</small>")
