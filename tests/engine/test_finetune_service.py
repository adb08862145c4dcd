"""The fine-tune story below the page, on real adapters trained here (a few steps): the doctor examines the adapter
picked and leads with the cause (for eos_as_text, the end written as text), its p(EOS) is what Compare shows for
that model, a reload's default columns never repeat a model, and a training belongs to the server (it writes its
adapter with no page following it; Stop writes what it learned; Train is free again)."""

from __future__ import annotations

import json
import time

import pytest

from playground.doctor import diagnose, load_sample, report_markdown
from playground.doctor.ranking import ranked
from playground.finetune import lab as lab_module
from playground.finetune.data import builtin_data
from playground.finetune.lab import Lab
from playground.finetune.train import CARD_FILE, SAMPLE_FILE, FineTune, TrainConfig
from playground.links import PAGE_DEFAULTS
from playground.models import load_model
from playground.prompts import encode_prompt
from playground.request import MAX_COLUMNS
from playground.service import Playground
from playground.supervision import IGNORE_INDEX

# Measured (commit message): 4 steps of eos_as_text at lr 3e-3 take the median p(<|im_end|>) at the answer end
# from 0.22 (base) to 0.005; one step of the correct recipe is enough for an adapter whose labels are right.
SMALL = TrainConfig(batch_size=2, lora_r=4, lora_alpha=8, learning_rate=3e-3, max_length=96)
SAMPLED = 8  # examples of the adapter's training_data.jsonl the doctor reads (each is a forward pass)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model of its own (the session's is shared) with two adapters trained on it and then added to it, as the
    Model panel's Add adapter does: ``broken`` (eos_as_text) and ``fixed`` (correct). Yields (bundle, folder)."""
    bundle = load_model()
    root = tmp_path_factory.mktemp("adapters")
    for name, recipe, steps in (("broken", "eos_as_text", 4), ("fixed", "correct", 1)):
        config = TrainConfig(**{**SMALL.__dict__, "recipe": recipe, "steps": steps})
        assert list(FineTune(bundle, builtin_data(), config, root / name).run())[-1].done
    for name in ("broken", "fixed"):
        bundle.add_adapter(name, str(root / name))
    return bundle, root


def sample_of(root, name: str) -> list[dict]:
    return load_sample(root / name / SAMPLE_FILE)[:SAMPLED]


def test_the_doctor_examines_the_adapter_picked_and_leads_with_the_end_written_as_text(served):
    bundle, root = served
    findings = diagnose(bundle, sample=sample_of(root, "broken"), model="broken")
    found = {f.id: f for f in findings}
    measured = found["p_eos_at_answer_end"]
    assert measured.data["model"] == "broken" and measured.status == "problem"
    # Its own figures, not the base's (before: one cached forward pass for every model, the base examined).
    base, broken = measured.data["without_adapter"]["median"], measured.data["median"]
    assert broken < base / 10
    assert measured.data["per_model"]["broken"]["median"] == broken
    assert measured.data["per_model"]["base"]["median"] == base
    assert measured.data["per_model"]["fixed"]["median"] != broken
    # The first problem is the cause the sample shows, then the measurement; pad = EOS (a guess at a collator) later.
    problems = [f.id for f in ranked(findings) if f.status == "problem"]
    assert problems[:2] == ["sample_ends_with_eos", "p_eos_at_answer_end"] and "pad_is_eos" in problems[2:]
    markdown = report_markdown(findings)
    assert "**Most likely cause** of the low p(EOS) where answers end: Training examples without an EOS id" in markdown
    first = markdown.index("### ")
    assert markdown[first:].startswith("### ❌ Training examples without an EOS id after the answer")
    assert markdown.index("`sample_ends_with_eos`") < markdown.index("`pad_is_eos`")
    # The fixed adapter's labels supervise the end token: pad = EOS did no harm, so it is not a warning.
    fixed = {f.id: f for f in diagnose(bundle, sample=sample_of(root, "fixed"), model="fixed", probe=False)}
    assert fixed["pad_is_eos"].status == "ok" and fixed["sample_ends_with_eos"].status == "ok"
    with pytest.raises(ValueError, match="model 'nope' is not loaded"):
        diagnose(bundle, model="nope")


def test_the_doctors_p_eos_is_what_compare_shows_for_that_model(served):
    bundle, _ = served
    playground = Playground(bundle)
    prompt = "What can I do in Paris?"
    comparison = playground.comparison(prompt, ["baseline@base", "baseline@broken"], max_new_tokens=6)
    trace = list(playground.stream(comparison))[-1]
    prompt_ids = encode_prompt(bundle.tokenizer, prompt)
    seen = {}
    for variant in trace.variants:
        ids = variant.token_ids
        # The doctor's answer ends before trailing whitespace: feed up to a step whose last token is a word.
        k = max(i for i in range(1, len(ids)) if bundle.tokenizer.decode(ids[i - 1:i]).strip())
        sample = [{"input_ids": prompt_ids + ids[:k], "labels": [IGNORE_INDEX] * len(prompt_ids) + ids[:k]}]
        measured = {f.id: f for f in diagnose(bundle, sample=sample, model=variant.model)}["p_eos_at_answer_end"]
        seen[variant.model] = measured.data["p_eos"][0]
        assert 0 < seen[variant.model] == pytest.approx(variant.steps[k].p_eos_raw, rel=0.02)
    assert seen["broken"] != pytest.approx(seen["base"], rel=0.02)  # two models, two figures


def test_default_columns_never_repeat_a_model(served):
    bundle, root = served
    playground = Playground(bundle)
    # Two adapters: the story's columns on the base, and one baseline per adapter the user added.
    assert [c.name for c in playground.default_columns()] == ["baseline", "baseline@broken", "baseline@fixed",
                                                               "eos_reward"]
    page = playground.default_columns(PAGE_DEFAULTS["columns"])[:MAX_COLUMNS]
    assert [c.name for c in page] == ["baseline", "baseline@broken", "baseline@fixed", "eos_reward"]
    bundle.remove_adapter("fixed")
    try:  # one adapter: it is what a plain column runs, the base beside it
        assert [c.name for c in playground.default_columns(PAGE_DEFAULTS["columns"])] == [
            "baseline@base", "baseline", "eos_reward", "seed_article"]
    finally:
        bundle.add_adapter("fixed", str(root / "fixed"))


def wait_until(condition, seconds: float = 900) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def test_a_training_belongs_to_the_server_and_stop_writes_what_it_learned(served, tmp_path, monkeypatch):
    bundle, _ = served
    monkeypatch.setattr(lab_module, "ADAPTERS_DIR", tmp_path)
    (tmp_path / "mine").mkdir()  # a folder of that name exists: nothing is overwritten
    lab = Lab(Playground(bundle), config=SMALL)
    job = lab.start("eos_as_text", None, 40, "mine")  # nobody follows it: as a page closed at once
    assert lab.name == "mine-2" and job.out == (tmp_path / "mine-2").absolute()
    with pytest.raises(ValueError, match=r"finetune: a training is running \(step \d+ of 40\)"):
        lab.start("correct", None, 2, "other")
    wait_until(lambda: job.progress.step >= 1)
    assert lab.stop()
    wait_until(lambda: not job.running)
    assert job.error is None and job.progress.done and job.progress.stopped
    card = json.loads((job.out / CARD_FILE).read_text())
    assert card["stopped_early"] and 1 <= card["steps"] < 40 and card["recipe"] == "eos_as_text"
    assert (job.out / "adapter_config.json").is_file() and (job.out / SAMPLE_FILE).is_file()
    assert not lab.stop()  # nothing is training: Train is free again
    assert lab.serve() == "mine-2" and bundle.adapters["mine-2"] == str(job.out)
    bundle.remove_adapter("mine-2")
    with pytest.raises(ValueError, match="adapter name must be 1 to 64 letters"):
        lab.start("correct", None, 2, "../escape")


def test_in_public_mode_a_training_it_allows_is_put_beside_the_base(served, tmp_path, monkeypatch):
    """A public app that allows training (caps.finetune_max_steps) offers Compare with the base and Diagnose: the
    adapter it trained is the server's own folder, so the visitors' allowlist does not refuse it; a visitor's own
    path still is refused."""
    from playground.space.policy import Policy

    bundle, root = served
    monkeypatch.setattr(lab_module, "ADAPTERS_DIR", tmp_path)
    playground = Playground(bundle, policy=Policy(public=True, finetune_max_steps=2))
    lab = Lab(playground, config=SMALL)
    job = lab.start("correct", None, 1, "public-run")
    wait_until(lambda: not job.running)
    assert job.error is None and job.progress.done
    try:  # (named public-run-2 and so on when an earlier run left its folder in the temporary folder)
        assert lab.serve() == lab.name and lab.name.startswith("public-run") and lab.name in playground.column_models()
        with pytest.raises(ValueError, match="^adapter: .* is not available on this app"):
            playground.add_adapter(f"mine={root / 'fixed'}")
    finally:
        bundle.remove_adapter(lab.name)
