"""Safe to share, in the service: the share policy (the loaded model and default only, no paths, adapters or
remote code) for a host that is not loopback, model references and page columns checked into sentences, and
host paths never shown."""

from __future__ import annotations

import json
import re

import pytest

from playground.service import Playground
from playground.space.config import load_config
from playground.space.policy import Policy, exposed_by
from playground.ui.model_panel import model_markdown
from playground.ui.page_input import page_columns

MODEL = "SmolLM2-135M-Instruct"
# What a message to a stranger must never contain: any absolute path, and the places this host keeps things.
HOST_DIRS = re.compile(r"/(root|tmp|work|home|proc|etc|dev|usr|var)\b|\.cache|gradio/")


# ---- the policy app.main chooses ------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch, smollm):
    """Run app.main(argv) up to launch; return (playground, launch keyword arguments)."""
    import playground.ui

    monkeypatch.setattr("playground.cli.load_from_args", lambda args: smollm)
    seen = {}

    def fake_launch(playground, **kwargs):
        seen.update(kwargs, playground=playground)

    monkeypatch.setattr(playground.ui, "launch", fake_launch)

    def serve(*argv: str):
        import app

        app.main(list(argv))
        return seen.pop("playground"), seen

    return serve


def test_share_without_the_flag_refuses_paths_adapters_and_remote_code(served, capsys):
    playground, launched = served("--share")
    assert launched["share"] is True
    policy = playground.policy
    assert policy.public and policy.allowed_models == ("default",)
    caps = load_config().caps
    assert policy.max_new_tokens == caps["max_new_tokens"] and policy.time_limit_seconds == caps["time_limit_seconds"]
    for reference in ["/etc", "/root/.ssh", "/proc/self/environ", "./playground", "~/.cache", "../x"]:
        with pytest.raises(ValueError, match="^model: local paths cannot be loaded"):
            playground.load(reference)
    with pytest.raises(ValueError, match="^trust_remote_code"):
        playground.load("default", None, True)
    with pytest.raises(ValueError, match="^trust_remote_code"):
        playground.load("default", None, "true")
    with pytest.raises(ValueError, match="^adapter"):
        playground.load("default", "/root/lora")
    # Whether a name exists on the host changes nothing in the answer ("playground" is a folder here).
    messages = []
    for reference in ["playground", "no-such-folder-here"]:
        with pytest.raises(ValueError) as error:
            playground.load(reference)
        messages.append(str(error.value).replace(reference, "X"))
    assert messages[0] == messages[1]
    panel = model_markdown(playground)
    assert "from embedded SmolLM2-135M-Instruct.Q4\\_1.gguf, loaded" in panel  # no cache path (Markdown-escaped: md_text)
    assert not HOST_DIRS.search(panel) and HOST_DIRS.search(playground.bundle.info.source)
    assert "visitors may use default only" in capsys.readouterr().out


def test_a_host_that_is_not_loopback_gets_the_share_policy(served):
    assert served("--host", "0.0.0.0")[0].policy.public
    assert not served("--host", "127.0.0.1")[0].policy.public
    assert [exposed_by(False, h) for h in ("localhost", "::1", "127.0.0.2", "192.168.1.5", "myhost")] == [
        None, None, None, "host 192.168.1.5", "host myhost"]


def test_a_local_model_served_over_a_share_link_never_shows_its_path(served, smollm):
    directory = smollm.info.source.split("(cache ")[1].rstrip(")")
    playground, _ = served("--share", "--model", directory)
    assert playground.policy.allowed_models == ("default",)  # its path is not offered in the Model panel
    assert directory not in json.dumps(playground.info()) and playground.info()["reference"] == MODEL
    assert playground.shown_reference == MODEL  # what the copied fix's from_pretrained() names
    assert directory not in model_markdown(playground)


def test_allow_local_models_needs_auth_and_keeps_the_caps(served):
    with pytest.raises(SystemExit, match="--auth"):
        served("--share", "--allow-local-models")
    with pytest.raises(SystemExit, match="--trust-remote-code"):
        served("--share", "--trust-remote-code")
    playground, launched = served("--share", "--allow-local-models", "--auth", "ann:secret")
    assert launched["auth"] == ("ann", "secret")
    assert playground.policy.allowed_models is None and playground.policy.allow_trust_remote_code
    assert playground.policy.max_new_tokens == load_config().caps["max_new_tokens"]


def test_doctor_sample_is_capped_before_it_is_read_and_errors_name_only_the_file(tiny, tmp_path):
    playground = Playground(tiny, policy=Policy(max_upload_mb=0.001))
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "x"}\n' * 200)  # 2.8 kB over a 1 kB cap
    with pytest.raises(ValueError, match=r"^training sample is 0\.0 MB; this app reads at most 0\.001 MB"):
        playground.read_sample(str(big))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError) as error:
        playground.read_sample(str(bad))
    assert str(error.value) == ("training sample bad.jsonl, line 1: not valid JSON (Expecting property name enclosed "
                                "in double quotes at column 2)")
    assert Playground(tiny).policy.max_upload_mb == 1.0  # the local app has a cap too


@pytest.mark.parametrize("reference, message", [
    ("http://example.com/org/model", "is a URL: give a hub id"),
    ("https://huggingface.co/HuggingFaceTB/SmolLM2-135M/tree/main", "For this one give HuggingFaceTB/SmolLM2-135M."),
    ("/dev/zero", "is not a regular file or directory"),
    ("!!not a model!!", "is not a hub id"),
    ("a" * 300, "is not a hub id"),
    ("/no/such/dir", "No such file or directory: /no/such/dir"),
])
def test_model_references_get_sentences_not_library_text(reference, message):
    from playground.models import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match=re.escape(message)) as error:
        load_model(reference)
    assert "http:/" + "e" not in str(error.value) and "HFValidationError" not in str(error.value)
    assert "model" in str(error.value).lower()


@pytest.mark.parametrize("n_columns, pickers, message", [
    (None, [[], []], "Columns is empty: give a whole number"),  # was an unhandled TypeError
    ("two", [[], []], "Columns must be a whole number, got 'two'"),
    (3, [[], []], "Columns must be between 1 and 2, got 3"),
    (1.5, [[], []], "Columns must be a whole number"),
    (2, [[], 5], "Column 2 interventions must be a list of intervention names, got 5"),
    (1, [[None]], "Column 1 interventions must be a list of intervention names"),
])
def test_the_page_columns_are_checked_like_the_api(tiny, n_columns, pickers, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        page_columns(n_columns, pickers)
    assert [c.name for c in page_columns("2", [None, "eos_reward", ["ban_eos"]])] == ["baseline", "eos_reward"]


def test_a_prompt_longer_than_the_context_says_to_shorten_it(tiny):
    with pytest.raises(ValueError, match=r"^prompt is \d+ tokens, the model's whole context window is 512: shorten it"):
        Playground(tiny).comparison("word " * 600, [[]], max_new_tokens=8, temperature=0, top_p=1, top_k=0, seed=0,
                                    reward_start_ratio=0.5, strength=12)
