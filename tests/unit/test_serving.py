"""What a Space on a T4 needs, without a model: fp16 where bf16 is emulated, a gated model's load failure that says
what to do, and spaces.yaml's one model unless it allows swaps, with its budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import app
from playground.models import _friendly_error, _torch_dtype
from playground.space.config import SPACES_FILE, load_config


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_auto_dtype_is_float16_below_compute_capability_8(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 reports
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert _torch_dtype("auto", "cuda") == dtype


def test_a_gated_model_tells_the_owner_to_accept_the_license_and_add_a_token():
    error = OSError("You are trying to access a gated repo.\nMake sure to have access to it at "
                    "https://huggingface.co/meta-llama/Llama-2-7b-chat-hf.\n401 Client Error.")
    message = str(_friendly_error("meta-llama/Llama-2-7b-chat-hf", error))
    assert "accept its license" in message and "HF_TOKEN" in message and "secret" in message


def write_config(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(SPACES_FILE.read_text(encoding="utf-8"))
    data.update(changes)
    path = tmp_path / "spaces.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_spaces_yaml_keeps_one_model_unless_it_allows_swaps_and_may_set_a_budget(tmp_path):
    config = load_config()
    assert config.allow_model_swap is False and config.policy().model_swap is False
    assert any(line.startswith(config.model.reference) for line in config.card["preload_from_hub"])
    changed = load_config(write_config(tmp_path, allow_model_swap=True, kv_budget_mb=6000))
    assert changed.policy().model_swap is True and changed.kv_budget_mb == 6000
    with pytest.raises(ValueError, match="kv_budget_mb must be a number of megabytes above 0"):
        load_config(write_config(tmp_path, kv_budget_mb=-1))
    assert app.parse_args(["--kv-budget-mb", "64"]).kv_budget_mb == 64
