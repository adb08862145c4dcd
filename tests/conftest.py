"""The tiers and the fixtures they share.

Each folder is a tier, marked by its name (``pytest tests/unit`` or ``pytest -m unit`` runs one):
unit (no model, no server), engine (the real embedded model, no server), app (app.py over HTTP and
gradio_client), browser (the page in real Chromium). Fixtures load lazily, so a tier pays only for what it uses.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path

import pytest

from tests.support import PARIS, hostile_trace, launch_app, make_tiny_llama, train_lora

TIERS = ("unit", "engine", "app", "browser")
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark each test with its folder's tier."""
    for item in items:
        tier = item.path.resolve().relative_to(_HERE).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in one of the tiers' folders {TIERS}")
        item.add_marker(tier)


# -- models ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct from the embedded GGUF (converted once, then read from the cache)."""
    from playground.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def tokenizer(smollm):
    return smollm.tokenizer


@pytest.fixture(scope="session")
def tiny(tokenizer):
    """A random 2-layer Llama with SmolLM2's tokenizer, as a LoadedModel."""
    from playground.models import LoadedModel, ModelInfo, eos_token_ids, stop_token_ids

    model = make_tiny_llama(tokenizer)
    info = ModelInfo(
        name="tiny-random-llama", source="random", num_parameters=model.num_parameters(), dtype="float32",
        device="cpu", context_length=512, eos_token_ids=eos_token_ids(tokenizer, model),
        stop_token_ids=stop_token_ids(tokenizer, model),
        pad_token_id=tokenizer.pad_token_id, has_chat_template=True, load_seconds=0.0,
        vocab_size=len(tokenizer),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


@pytest.fixture(scope="module")
def playground(smollm):
    """The embedded model's Playground, one per test module (its kept traces and runs are the module's own)."""
    from playground.service import Playground

    return Playground(smollm)


@pytest.fixture(scope="session")
def hostile(smollm):
    """The hostile hand-over trace (``tests.support.hostile_trace``), decoded once per session."""
    from playground.service import Playground

    return hostile_trace(Playground(smollm))


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory) -> dict[str, str]:
    """Two LoRA adapters of the embedded model trained once per session, and a DoRA one: name -> directory."""
    import torch
    from peft import LoraConfig, get_peft_model

    from playground.models import load_model

    torch.manual_seed(0)
    bundle = load_model()
    model = get_peft_model(bundle.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
                           adapter_name="scratch")
    root = tmp_path_factory.mktemp("adapters")
    answers = {"louvre": "Visit the Louvre.", "seine": "Walk along the Seine and eat croissants every morning."}
    for name, answer in answers.items():
        train_lora(model, bundle.tokenizer, name, PARIS, answer)
    # DoRA only has to be an adapter PEFT cannot mix; non-zero initial weights make it differ from the base.
    model.add_adapter("dora", LoraConfig(r=8, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False))
    model.eval()
    for name in (*answers, "dora"):
        model.save_pretrained(root, selected_adapters=[name])
    return {name: str(root / name) for name in (*answers, "dora")}


# -- served apps (the app and browser tiers) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def app_server(smollm):
    """`python app.py` on a free local port with the embedded model; yields its URL (with .pid and .log)."""
    yield from launch_app()


@pytest.fixture(scope="session")
def public_app_server(smollm):
    """`python app.py --public`, as in the Space: spaces.yaml's caps and allowlist. Its Llama needs a GPU, so
    here it serves the default model with a banner saying so. Yields its URL (with .pid and .log)."""
    yield from launch_app("--public", env={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="session")
def shared_app_server(smollm):
    """`python app.py --host 0.0.0.0`: reachable from other machines, so served with the share policy (the loaded
    model and default only, spaces.yaml's caps, no paths). Driven on 127.0.0.1; yields its URL (.pid, .log)."""
    yield from launch_app("--host", "0.0.0.0")
