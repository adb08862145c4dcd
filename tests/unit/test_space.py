"""The Space: spaces.yaml as the single source of truth, README front matter that cannot drift, the deploy
command (dry run only: nothing here may reach the Hub) and public mode's policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from playground.space.config import ServedModel, front_matter, load_config, readme_drift, readme_with_front_matter
from playground.space.deploy import UPLOAD_IGNORE, deploy, plan_deploy, upload_files
from playground.space.deploy import main as deploy_main
from playground.space.policy import Policy
from playground.space.serving import is_public
from tests.support import ROOT



@pytest.fixture(scope="module")
def config():
    return load_config()


# -- spaces.yaml and the README front matter -------------------------------------------------------------------


def test_spaces_yaml_describes_the_t4_deployment(config):
    import gradio

    assert config.card["sdk"] == "gradio" and config.card["app_file"] == "app.py"
    assert config.card["sdk_version"] == gradio.__version__  # the version the tests ran with
    assert config.card["suggested_hardware"] == config.hardware == "t4-small"
    assert config.model == ServedModel("meta-llama/Llama-2-7b-chat-hf", quantize="4bit", dtype="float16", gpu_only=True)
    assert "default" in config.allowed_models and config.public is True
    assert config.caps["max_new_tokens"] <= 2048 and config.caps["max_columns"] <= 4
    assert (ROOT / config.card["app_file"]).is_file()


def test_readme_front_matter_is_rendered_from_spaces_yaml(config):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_drift(config) == [], "run: python -m playground deploy --sync-readme"
    assert readme.startswith(front_matter(config))  # byte for byte, at the very top
    assert "meta-llama/Llama-2-7b-chat-hf" in front_matter(config)  # the allowed models become `models`


def test_drift_is_detected_and_sync_repairs_it(config, tmp_path):
    readme = tmp_path / "README.md"
    body = "# EOS Playground\n\nText the lead owns.\n"
    readme.write_text(readme_with_front_matter(body, config))
    assert readme_drift(config, readme) == []
    readme.write_text(readme.read_text().replace("sdk_version: 6.31.0", "sdk_version: 5.0.0"))
    drift = readme_drift(config, readme)
    assert len(drift) == 1 and drift[0].startswith("sdk_version")
    repaired = readme_with_front_matter(readme.read_text(), config)
    readme.write_text(repaired)
    assert readme_drift(config, readme) == [] and repaired.endswith(body) and repaired.count("---\n") == 2
    readme.write_text(body)
    assert readme_drift(config, readme) == ["README.md does not start with a front matter block (---)"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["caps"].update(max_new_tokens=10**6), "caps.max_new_tokens"),
    (lambda d: d["caps"].update(queue_size=0), "caps.queue_size"),
    (lambda d: d["caps"].update(surprise=1), "unknown caps"),
    (lambda d: d.update(hardware="t5-huge"), "hardware"),
    (lambda d: d["model"].update(quantize="3bit"), "model.quantize"),
    (lambda d: d["model"].update(dtype="bfloat17"), "model.dtype"),
    (lambda d: d.update(allowed_models=["meta-llama/Llama-2-7b-chat-hf"]), "'default'"),
    (lambda d: d.update(allowed_models=["default", "/home/me/model"]), "local path"),
    (lambda d: d["card"].update(sdk="streamlit"), "card.sdk"),
    (lambda d: d["card"].pop("sdk_version"), "card.sdk_version"),
    (lambda d: d["card"].update(short_description="x" * 61), "card.short_description"),
    (lambda d: d["card"].update(colorFrom="teal"), "card.colorFrom"),
    (lambda d: d["card"].update(models=["gpt2"]), "card.models"),
])
def test_a_broken_spaces_yaml_is_refused_naming_the_key(tmp_path, edit, message):
    data = yaml.safe_load((ROOT / "spaces.yaml").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "spaces.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_config(path)


# -- deploy --------------------------------------------------------------------------------------------------


def test_deploy_dry_run_prints_exactly_what_would_be_uploaded_and_set(capsys):
    from playground.cli import main

    assert main(["deploy", "--space", "someone/eos-playground", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ") and "=" not in line]
    assert listed == upload_files(ROOT)
    for needed in ("app.py", "requirements.txt", "README.md", "spaces.yaml", "playground/space/deploy.py", "playground/ui/compare.py"):
        assert needed in listed
    for path in listed:
        assert not path.startswith(("tests/", ".", "test-artifacts/")) and "__pycache__" not in path
        assert not path.endswith((".pyc", ".safetensors", ".gguf"))
    assert "request hardware: t4-small" in out
    assert "PLAYGROUND_PUBLIC=1" in out and "PLAYGROUND_MODEL=meta-llama/Llama-2-7b-chat-hf" in out
    assert "HF_TOKEN" in out  # the gated model needs a secret in the Space


def test_dry_run_list_is_what_upload_folder_would_send(monkeypatch):
    """Cross-check against huggingface_hub's own listing (its README check would call the Hub: skipped)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS

    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, **kwargs: None)
    operations = HfApi()._prepare_upload_folder_additions(ROOT, "", ignore_patterns=UPLOAD_IGNORE + DEFAULT_IGNORE_PATTERNS,
                                                          repo_type="space")
    assert [op.path_in_repo for op in operations] == upload_files(ROOT)


class _HubMustNotBeCalled(AssertionError):
    pass


def _forbid_hub(monkeypatch):
    from huggingface_hub import HfApi

    for name in ("create_repo", "upload_folder", "request_space_hardware", "add_space_variable", "whoami"):
        monkeypatch.setattr(HfApi, name, lambda *a, _name=name, **k: (_ for _ in ()).throw(_HubMustNotBeCalled(_name)))


def test_deploy_without_a_token_stops_with_a_clear_message(monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    from playground.cli import main

    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    _forbid_hub(monkeypatch)
    assert main(["deploy", "--space", "someone/eos-playground"]) == 2
    err = capsys.readouterr().err
    assert "token" in err and "hf auth login" in err and "--dry-run" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("space_id", ["no-owner", "a/b/c", "bad owner/x", ""])
def test_deploy_refuses_a_malformed_space_id(monkeypatch, capsys, space_id):
    _forbid_hub(monkeypatch)
    assert deploy_main(["--space", space_id, "--dry-run"]) == 2
    assert "--space must be OWNER/NAME" in capsys.readouterr().err


def test_deploy_refuses_when_readme_front_matter_drifted(monkeypatch, tmp_path, capsys):
    _forbid_hub(monkeypatch)
    data = yaml.safe_load((ROOT / "spaces.yaml").read_text(encoding="utf-8"))
    data["card"]["title"] = "Another title"
    drifted = tmp_path / "spaces.yaml"
    drifted.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert deploy_main(["--space", "someone/eos", "--config", str(drifted), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "title" in err and "--sync-readme" in err


class RecordingHub:
    """Stands in for HfApi to check the calls deploy() makes, in order (the real Hub is never contacted here)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return f"https://huggingface.co/spaces/{args[0] if args else kwargs.get('repo_id')}"
        return record


def test_deploy_creates_the_space_sets_it_up_then_uploads(config):
    plan = plan_deploy(config, "someone/eos-playground")
    hub = RecordingHub()
    deploy(plan, token="not-used", api=hub, log=lambda message: None)
    names = [name for name, _, _ in hub.calls]
    assert names == ["create_repo", "add_space_variable", "add_space_variable", "request_space_hardware", "upload_folder"]
    _, args, kwargs = hub.calls[0]
    assert args == ("someone/eos-playground",)
    assert kwargs["repo_type"] == "space" and kwargs["space_sdk"] == "gradio" and kwargs["exist_ok"] is True
    assert {c[1][1]: c[1][2] for c in hub.calls[1:3]} == {"PLAYGROUND_PUBLIC": "1",
                                                          "PLAYGROUND_MODEL": "meta-llama/Llama-2-7b-chat-hf"}
    assert hub.calls[3][1] == ("someone/eos-playground", "t4-small")
    upload = hub.calls[4][2]
    assert upload["repo_type"] == "space" and Path(upload["folder_path"]) == ROOT
    assert upload["ignore_patterns"] == UPLOAD_IGNORE and ".gitattributes" not in str(upload["delete_patterns"])


# -- public mode: policy --------------------------------------------------------------------------------------


def test_public_mode_is_on_in_a_space_or_when_asked():
    assert is_public(False, {}) is False
    assert is_public(True, {}) is True
    assert is_public(False, {"SPACE_ID": "someone/eos"}) is True
    assert is_public(False, {"SPACE_ID": "someone/eos", "PLAYGROUND_PUBLIC": "0"}) is False
    assert is_public(False, {"PLAYGROUND_PUBLIC": "1"}) is True


def test_public_policy_allows_only_the_allowlist_with_its_load_options(config):
    gpu = config.policy(cuda=True)
    assert gpu.check_model(" default ") == "default"
    assert gpu.check_model("meta-llama/Llama-2-7b-chat-hf") == "meta-llama/Llama-2-7b-chat-hf"
    options = gpu.options_for("meta-llama/Llama-2-7b-chat-hf")
    assert options == {"quantize": "4bit", "dtype": "float16", "device": "auto", "trust_remote_code": False}
    assert gpu.options_for("default")["dtype"] == "float16" and gpu.options_for("default")["quantize"] is None
    cpu = config.policy(cuda=False)
    with pytest.raises(ValueError, match="^model: meta-llama/Llama-2-7b-chat-hf needs a GPU"):
        cpu.check_model("meta-llama/Llama-2-7b-chat-hf")
    assert cpu.options_for("default")["dtype"] == "auto"  # float32 on the CPU
    for reference, message in [("/etc", "local paths"), ("~/models/x", "local paths"), ("a/b/c", "local paths"),
                               ("C:\\models", "local paths"), ("gpt2", "not available")]:
        with pytest.raises(ValueError, match=f"^model: .*{message}"):
            gpu.check_model(reference)
    with pytest.raises(ValueError, match="^trust_remote_code"):
        gpu.check_model("default", trust_remote_code=True)
    with pytest.raises(ValueError, match="^adapter"):
        gpu.check_model("default", adapter="someone/lora")
    # An operator-chosen served model is always allowed.
    served = ServedModel("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert config.policy(served, cuda=True).check_model(served.reference) == served.reference


def test_local_policy_lets_the_owner_load_anything():
    local = Policy.local()
    assert local.check_model("/some/dir", "my-lora", True) == "/some/dir"
    assert local.options_for("/some/dir", {"dtype": "float32"}, trust_remote_code=True) == {
        "dtype": "float32", "trust_remote_code": True}
    with pytest.raises(ValueError, match="^stop_strings"):
        local.check_request("Hi", None, [[]], ["x" * 101])  # a huge stop string builds tables for minutes
