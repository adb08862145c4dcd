"""A second full checkpoint as a column: ``--checkpoint NAME=PATH`` loads another model of the same tokenizer, and a
column ``baseline@NAME`` decodes on it in its own decode loop, beside the loaded model's columns in one comparison.

The checkpoint is real: a LoRA trained here on the embedded model (as the session's adapters), merged into a copy of it
and saved as a full model directory, once per session.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from playground.engine import Comparison, Settings, SplitComparison, Variant
from playground.models import BASE, ModelLoadError, load_model
from playground.prompts import encode_prompt
from tests.support import PARIS, train_lora

N = 16  # tokens per column: enough for the checkpoint to answer differently


@pytest.fixture(scope="session")
def merged_dir(tmp_path_factory) -> str:
    """The embedded model with a two-step LoRA merged into its weights (``merge_and_unload``), saved with its
    tokenizer: a merged fine-tune directory."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    bundle = load_model()
    model = get_peft_model(bundle.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
                           adapter_name="scratch")
    train_lora(model, bundle.tokenizer, "louvre", PARIS, "Visit the Louvre.")
    model.eval()
    directory = tmp_path_factory.mktemp("checkpoints") / "merged"
    model.merge_and_unload().save_pretrained(directory)
    bundle.tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def other_eos_dir(merged_dir, tmp_path_factory) -> str:
    """The merged checkpoint's weights (linked, not copied) with a tokenizer whose EOS is another token."""
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("checkpoints") / "other-eos"
    directory.mkdir()
    for name in os.listdir(merged_dir):
        if not name.startswith(("tokenizer", "special_tokens", "chat_template")):
            os.symlink(os.path.join(merged_dir, name), directory / name)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    tokenizer.eos_token = "<|endoftext|>"  # SmolLM2's ends on <|im_end|>
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def with_checkpoint(merged_dir):
    """The embedded model with the merged checkpoint beside it, named ``merged``."""
    return load_model(checkpoint=f"merged={merged_dir}")


def _generate(bundle, n: int = N) -> list[int]:
    """``generate()`` on ``bundle``'s model alone, greedy."""
    ids = torch.tensor([encode_prompt(bundle.tokenizer, PARIS)])
    with torch.inference_mode():
        out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                    pad_token_id=bundle.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_base_and_checkpoint_columns_equal_each_models_generate(with_checkpoint):
    """One comparison, two loaded models: each column decodes what its model's generate() does, the columns keep
    the order and names given, and the trace (and its stream) says the checkpoint's passes are not shared."""
    from playground.service import Playground
    from playground.stream import DeltaStream, TraceBuilder

    playground = Playground(with_checkpoint)
    comparison = playground.comparison(PARIS, ["baseline@base", "baseline@merged"], max_new_tokens=N)
    assert isinstance(comparison, SplitComparison) and len(comparison.parts) == 2
    builder = TraceBuilder()
    for event in DeltaStream(comparison).events(playground.stream(comparison)):
        builder.apply(event)
    trace = comparison.trace
    base, merged = trace.variants
    assert [(v.name, v.model) for v in trace.variants] == [("baseline@base", BASE), ("baseline@merged", "merged")]
    assert base.token_ids == _generate(with_checkpoint)
    assert merged.token_ids == _generate(with_checkpoint.checkpoints["merged"])
    assert merged.token_ids != base.token_ids  # the merged LoRA really changed the model
    assert merged.diverges_at == next(i for i, (a, b) in enumerate(zip(merged.token_ids, base.token_ids)) if a != b)
    columns = trace.to_dict()["variants"]
    assert [c["shared_forward"] for c in columns] == [True, False]
    assert "not shared" in columns[1]["model_note"] and "not shared" in merged.status() and columns[0]["model_note"] is None
    assert builder.trace == trace.to_dict()  # the stream carries the same trace, shared_forward included


def test_columns_of_two_models_interleaved_keep_their_order_and_branch_on_their_model(with_checkpoint):
    """merged, base, merged: the trace has them in that order (each part's columns placed back), and a branch of
    the checkpoint's column continues on the checkpoint."""
    variants = [Variant("m", model="merged"), Variant("b", model=BASE), Variant("m+reward", ["eos_reward"], model="merged")]
    comparison = SplitComparison(with_checkpoint, PARIS, variants, Settings(max_new_tokens=N))
    for trace in comparison.run():
        pass
    assert [(v.name, v.model, v.shared_forward) for v in trace.variants] == [
        ("m", "merged", False), ("b", BASE, True), ("m+reward", "merged", False)]
    assert trace.variants[1].token_ids == _generate(with_checkpoint)
    parent = trace.variants[0]
    branches = Comparison.of_branches(with_checkpoint, trace, [(1, 3, parent.token_ids[3])])
    assert isinstance(branches, SplitComparison)
    for branched in branches.run():
        pass
    assert branched.variants[0].model == "merged" and branched.variants[0].token_ids == parent.token_ids


def test_the_cli_compares_a_base_column_with_a_checkpoint_column(merged_dir, with_checkpoint, capsys):
    from playground.cli import main

    assert main(["compare", "--prompt", PARIS, "--checkpoint", f"merged={merged_dir}", "--column", "baseline@base",
                 "--column", "baseline@merged", "--max-new-tokens", str(N), "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["model"], v["shared_forward"]) for v in trace["variants"]] == [
        ("baseline@base", BASE, True), ("baseline@merged", "merged", False)]
    assert trace["variants"][1]["token_ids"] == _generate(with_checkpoint.checkpoints["merged"])


def test_a_checkpoint_with_another_eos_is_refused_with_a_sentence(with_checkpoint, other_eos_dir, monkeypatch):
    """Its p(EOS) would sum other tokens and its columns would stop on others: not comparable, so not loaded —
    refused from its config and tokenizer, before gigabytes of weights load."""
    from transformers import AutoModelForCausalLM

    from playground.service import Playground

    def load_weights(*args, **kwargs):
        raise AssertionError("the weights of a refused checkpoint were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load_weights)
    with pytest.raises(ValueError, match=r"^checkpoint 'other': its EOS ids are .*'<\|endoftext\|>'.* the loaded "
                                         r"model's 2 '<\|im_end\|>'.*could not be compared") as refused:
        Playground(with_checkpoint).add_checkpoint(f"other={other_eos_dir}")
    assert isinstance(refused.value, ModelLoadError)  # what the CLI and the page already report as a sentence
    assert with_checkpoint.column_models() == [BASE, "merged"]


def test_the_service_lists_checkpoints_and_public_mode_takes_only_its_allowlist(with_checkpoint, merged_dir):
    from playground.service import Playground
    from playground.space.policy import Policy

    info = Playground(with_checkpoint).info()
    assert info["models"] == [BASE, "merged"] and info["checkpoints"] == {"merged": merged_dir}
    public = Playground(with_checkpoint, policy=Policy(public=True, allowed_models=("default",),
                                                       allowed_checkpoints=("org/dpo",)))
    with pytest.raises(ValueError, match="^checkpoint: .* is not available on this app; pick one of: org/dpo$"):
        public.add_checkpoint(f"mine={merged_dir}")
    assert public.info()["checkpoints"] == {"merged": "<path>"}  # a stranger never sees a host path
    with pytest.raises(ModelLoadError, match="checkpoint name 'merged' is already an adapter's"):
        load_model(adapter="merged=/runs/a", checkpoint="merged=/runs/b")


def test_evaluate_runs_a_checkpoint_column(with_checkpoint):
    from playground.service import Playground

    evaluation = Playground(with_checkpoint).evaluation(["Say hi."], ["baseline@base", "baseline@merged"],
                                                        max_new_tokens=4)
    for _ in evaluation.run():
        pass
    assert sorted(m["model"] for m in evaluation.report().models()) == [BASE, "merged"]


def test_the_export_of_a_checkpoint_column_loads_that_checkpoint(with_checkpoint, merged_dir):
    from playground.export import export_column

    comparison = SplitComparison(with_checkpoint, PARIS, [Variant("b", model=BASE), Variant("m", model="merged")],
                                 Settings(max_new_tokens=N))
    assert f"MODEL = {merged_dir!r}" in export_column(comparison, column=1)
    assert merged_dir not in export_column(comparison, column=0)


@pytest.mark.slow  # a subprocess loading torch, transformers and the checkpoint
def test_the_export_of_a_checkpoint_column_reproduces_it(with_checkpoint, tmp_path):
    """Run with `python -I` (this package is not importable there): the snippet loads the checkpoint's directory."""
    from tests.support import finish_snippet, start_snippet

    from playground.export import export_column

    comparison = SplitComparison(with_checkpoint, PARIS, [Variant("b", model=BASE),
                                                          Variant("m", ["eos_reward"], model="merged")],
                                 Settings(max_new_tokens=N))
    process = start_snippet(export_column(comparison, column=1), tmp_path)
    for trace in comparison.run():
        pass
    assert finish_snippet(process)[1] == trace.variants[1].token_ids != trace.variants[0].token_ids
