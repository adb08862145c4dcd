"""One rule each, in every door: a path is treated as a path by the API, the CLI, the page and Evaluate."""

from __future__ import annotations

import pytest

from playground.export import export_code
from playground.models import ModelLoadError, load_model
from playground.space.policy import Policy

PATHS = ["/models/run", "./run", "../run", "~/run", ".cache", "C:\\models\\run", "runs/7/adapter", "model.gguf",
         "c:/models"]


@pytest.mark.parametrize("reference", PATHS)
def test_every_door_treats_a_path_as_a_path(reference):
    """The app's allowlist refuses it as a local path, a visitor's export loads it from the visitor's own copy,
    and the loader says it is not there (never "not a hub id")."""
    policy = Policy(public=True, allowed_models=("default",))
    with pytest.raises(ValueError, match="local paths cannot be loaded on this app"):
        policy.check_model(reference)
    code = export_code([], model_reference=reference, prompt="Hi", system_prompt=None, use_chat_template=True,
                       max_new_tokens=4, temperature=0.0, top_p=1.0, top_k=0, seed=0, reveal_paths=False)
    assert "# The app's own local model: put where your copy of it is." in code
    with pytest.raises(ModelLoadError, match="No such file or directory|Model file not found"):
        load_model(reference)
