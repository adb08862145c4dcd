"""Base vs fine-tune side by side: named LoRA adapters on one base, a model per column, mixed adapter batches.

The LoRA adapters are real: trained here on the embedded model (two AdamW steps at a high learning rate on one
chat answer each), once per session, and saved under the session's tmp directory (``adapter_dirs`` in
tests/conftest.py).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from playground.engine import Comparison, Settings, Variant, compare
from playground.models import BASE, load_model
from playground.prompts import encode_prompt
from tests.support import PARIS

N = 16


@pytest.fixture(scope="session")
def tuned(adapter_dirs):
    """The embedded model (its own copy) with the adapters louvre and seine: base + two LoRAs."""
    return load_model(adapter=[f"louvre={adapter_dirs['louvre']}", f"seine={adapter_dirs['seine']}"])


def _generate(bundle, model: str, n: int = N) -> list[int]:
    ids = torch.tensor([encode_prompt(bundle.tokenizer, PARIS)])
    with bundle.using(model), torch.inference_mode():
        out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                    pad_token_id=bundle.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_adapter_names_and_defaults(tuned, adapter_dirs):
    assert tuned.column_models() == [BASE, "louvre", "seine"]
    assert tuned.default_model == BASE  # two adapters: a column that names none uses the base
    assert tuned.info.adapters == {"louvre": adapter_dirs["louvre"], "seine": adapter_dirs["seine"]}
    with pytest.raises(ValueError, match="'nope' is not loaded.*'base', 'louvre', 'seine'"):
        Comparison(tuned, PARIS, [Variant("x", model="nope")], Settings(max_new_tokens=4))


def test_base_and_adapter_columns_equal_generate_with_and_without_the_adapter(tuned):
    trace = compare(tuned, PARIS, [Variant("base", model=BASE), Variant("louvre", model="louvre"),
                                   Variant("seine", model="seine")], Settings(max_new_tokens=N))
    base, louvre, seine = trace.variants
    assert [v.model for v in trace.variants] == [BASE, "louvre", "seine"]
    assert base.token_ids == _generate(tuned, BASE)
    assert louvre.token_ids == _generate(tuned, "louvre")
    assert seine.token_ids == _generate(tuned, "seine")
    # The adapters were trained away from the base: the columns really differ.
    assert louvre.token_ids != base.token_ids and seine.token_ids != base.token_ids


@pytest.mark.parametrize("settings", [Settings(max_new_tokens=N), Settings(max_new_tokens=N, temperature=0.9, seed=7)],
                         ids=["greedy", "sampled"])
def test_base_and_two_adapters_in_one_batch_equal_each_alone(tuned, settings):
    models = [BASE, "louvre", "seine"]
    together = compare(tuned, PARIS, [Variant(m, model=m) for m in models], settings)
    for model, column in zip(models, together.variants):
        alone = compare(tuned, PARIS, [Variant(model, model=model)], settings).variants[0]
        assert column.token_ids == alone.token_ids, model
        assert [s.p_eos_raw for s in column.steps] == pytest.approx([s.p_eos_raw for s in alone.steps], rel=1e-3, abs=1e-7)


def test_mixed_rows_give_each_row_what_peft_gives_it(tuned):
    """The decode loop's mixed LoRA batch (one weighted update per adapter, no row gathering) and PEFT's own
    ``adapter_names`` path give every row the same logits; an adapter on the embeddings keeps PEFT's path."""
    from playground import lora_batch
    from playground.decoder import forward_rows

    rows = ["__base__", "louvre", "seine", "louvre"]
    ids = torch.tensor([encode_prompt(tuned.tokenizer, PARIS)] * len(rows))
    assert lora_batch.supports(tuned.model, rows)
    with torch.inference_mode():
        ours = forward_rows(tuned.model, rows, input_ids=ids).logits
        peft = tuned.model(input_ids=ids, adapter_names=rows).logits
    torch.testing.assert_close(ours, peft, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours[0], ours[1])  # the adapter rows really differ from the base row

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    embedded = get_peft_model(load_model().model, LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"],
                                                             init_lora_weights=False), adapter_name="emb").eval()
    assert not lora_batch.supports(embedded, ["__base__", "emb"])
    with torch.inference_mode():
        mixed = forward_rows(embedded, ["__base__", "emb"], input_ids=ids[:2]).logits
        with embedded.disable_adapter():
            base = embedded(input_ids=ids[:2]).logits
        tuned_rows = embedded(input_ids=ids[:2]).logits
    torch.testing.assert_close(mixed[0], base[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mixed[1], tuned_rows[1], rtol=1e-4, atol=1e-4)


def test_runs_with_different_adapters_at_once_share_steps_and_keep_their_tokens(tuned):
    """Two visitors, one per adapter, submitted at the same moment: one batch, each its own tokens."""
    from playground.decoder import decode_loop

    alone = {m: compare(tuned, PARIS, [Variant(m, model=m)], Settings(max_new_tokens=N)).variants[0].token_ids
             for m in ("louvre", "seine")}
    loop = decode_loop(tuned)
    widest, stop = [0], threading.Event()

    def watch():
        while not stop.wait(0.005):
            widest[0] = max(widest[0], loop.rows_decoding)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    runs = {m: Comparison(tuned, PARIS, [Variant(m, model=m)], Settings(max_new_tokens=N)) for m in alone}
    done = [threading.Event() for _ in runs]
    for run, event in zip(runs.values(), done):
        run.submit(on_done=lambda _, event=event: event.set())
    assert all(event.wait(timeout=600) for event in done)
    stop.set()
    watcher.join()
    assert widest[0] == 2  # both rows decoded in the same batch
    for model, run in runs.items():
        assert run.trace.variants[0].token_ids == alone[model]


@pytest.mark.slow  # DoRA recomputes its weight norm at every forward pass: slow on a CPU
def test_a_dora_adapter_takes_turns_and_says_so(tuned, adapter_dirs):
    """PEFT cannot mix DoRA rows into a batch of other adapters: they get forward passes of their own, same tokens."""
    tuned.add_adapter("dora", adapter_dirs["dora"])
    try:
        assert not tuned.mixable("dora") and tuned.mixable("louvre")
        models = [BASE, "louvre", "dora"]
        together = compare(tuned, PARIS, [Variant(m, model=m) for m in models], Settings(max_new_tokens=12))
        for model, column in zip(models, together.variants):
            assert column.token_ids == _generate(tuned, model, 12), model
        assert "take turns" in together.variants[2].status() and together.variants[1].model_note is None
    finally:
        tuned.remove_adapter("dora")
    assert tuned.column_models() == [BASE, "louvre", "seine"]


def test_adding_and_removing_adapters_keeps_the_base(adapter_dirs):
    """From a plain model: add one (the default column model), a second (default: base), remove both."""
    bundle = load_model()
    before = compare(bundle, PARIS, [Variant("b")], Settings(max_new_tokens=8)).variants[0].token_ids
    bundle.add_adapter("louvre", adapter_dirs["louvre"])
    assert bundle.default_model == "louvre" and bundle.info.adapter == adapter_dirs["louvre"]
    bundle.add_adapter("seine", adapter_dirs["seine"])
    assert bundle.default_model == BASE and bundle.info.adapter is None
    with pytest.raises(ValueError, match="already loaded"):
        bundle.add_adapter("seine", adapter_dirs["seine"])
    bundle.remove_adapter("louvre")
    assert bundle.column_models() == [BASE, "seine"]
    bundle.remove_adapter("seine")
    assert bundle.column_models() == [BASE] and not hasattr(bundle.model, "peft_config")
    assert compare(bundle, PARIS, [Variant("b")], Settings(max_new_tokens=8)).variants[0].token_ids == before


@pytest.mark.slow  # a subprocess loading torch, transformers and the model
def test_the_export_of_an_adapter_column_loads_that_adapter_and_reproduces_it(tuned, tmp_path):
    """Run with `python -I` (this package is not importable there): the snippet loads the column's adapter only."""
    from tests.support import finish_snippet, start_snippet

    from playground.export import export_column

    comparison = Comparison(tuned, PARIS, [Variant("base", model=BASE), Variant("tuned", ["eos_reward"], model="louvre")],
                            Settings(max_new_tokens=N))
    code = export_column(comparison, column=1)
    assert "load_adapter(" in code and "load_adapter(" not in export_column(comparison, column=0)
    process = start_snippet(code, tmp_path)
    for trace in comparison.run():
        pass
    assert finish_snippet(process)[1] == trace.variants[1].token_ids != trace.variants[0].token_ids


def test_the_service_reads_a_columns_model_and_lists_the_models(tuned, adapter_dirs):
    """`@NAME` at the end of a column and the JSON form both pick the model; an unknown one is named."""
    from playground.service import Playground
    from playground.space.policy import Policy

    playground = Playground(tuned)
    assert playground.info()["models"] == [BASE, "louvre", "seine"] and playground.info()["default_model"] == BASE
    columns = ["baseline@base", {"model": "louvre", "interventions": ["eos_reward"]}, "ban_eos@seine"]
    comparison = playground.comparison(PARIS, columns, max_new_tokens=4, strength=8)
    assert [(v.name, v.model) for v in comparison.trace.variants] == [
        ("baseline@base", BASE), ("eos_reward@louvre", "louvre"), ("ban_eos@seine", "seine")]
    with pytest.raises(ValueError, match="'nope' is not loaded"):
        playground.comparison(PARIS, ["baseline@nope"], max_new_tokens=4)
    public = Playground(tuned, policy=Policy(public=True, allowed_models=("default",), allowed_adapters=("org/lora",)))
    with pytest.raises(ValueError, match="adapter: .* is not available on this app; pick one of: org/lora"):
        public.add_adapter(f"mine={adapter_dirs['dora']}")
    assert tuned.column_models() == [BASE, "louvre", "seine"]


def test_a_link_carries_each_columns_model():
    import urllib.parse

    from playground.links import PAGE_DEFAULTS, from_query, to_query
    from playground.request import parse_column

    columns = [parse_column("baseline@base"), parse_column("eos_reward@louvre")]
    query = to_query({**PAGE_DEFAULTS, "columns": columns})
    assert "c1=baseline%40base" in query and "c2=eos_reward%40louvre" in query
    settings, problems = from_query(dict(urllib.parse.parse_qsl(query)))
    assert settings["columns"] == columns and not problems
    assert from_query({"columns": "1", "c1": "ban_eos@"})[1] == [
        "c1: column 'ban_eos@': a column's model goes after @, e.g. baseline@base (write e.g. "
        "eos_reward(strength=8)+stop_strings); kept 'baseline'"]


def test_a_branch_continues_with_its_columns_model_and_the_story_compares_models(tuned):
    from playground.story import describe

    trace = compare(tuned, PARIS, [Variant("base", model=BASE), Variant("tuned", model="louvre")],
                    Settings(max_new_tokens=12))
    parent = trace.variants[1]
    branches = Comparison.of_branches(tuned, trace, [(2, 4, parent.token_ids[4])])
    for branch_trace in branches.run():
        pass
    child = branch_trace.variants[0]
    assert child.model == "louvre" and child.token_ids == parent.token_ids  # the adapter's own tokens, not the base's
    story = describe(trace)
    assert story[1].startswith("tuned (louvre) ") and story[-1].startswith("Models: base ")
    assert "louvre " in story[-1]


def test_the_cli_takes_several_adapters_and_a_model_per_column():
    from playground.cli import build_parser, columns_from_args
    from playground.request import parse_column

    args = build_parser().parse_args(["compare", "--prompt", PARIS, "--adapter", "louvre=/runs/a", "--adapter",
                                      "/runs/seine-lora/", "--column", "baseline@base", "--column",
                                      "eos_reward+stop_strings@louvre"])
    assert args.adapter == ["louvre=/runs/a", "/runs/seine-lora/"]
    columns = [parse_column(text) for text in columns_from_args(args)]
    assert [(c.model, c.names) for c in columns] == [(BASE, []), ("louvre", ["eos_reward", "stop_strings"])]
    from playground.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="adapter name 'base' is taken"):
        load_model(adapter="base=/runs/a")


def test_evaluate_reports_which_model_stops_best(tuned):
    """Columns across models in one evaluation: the report ranks the models by their cleanest column, and its
    JSON (what the tab and /evaluate hand out) carries that ranking."""
    import json

    from playground.service import Playground

    evaluation = Playground(tuned).evaluation(["Say hi."], ["baseline@base", "baseline@louvre", "eos_reward@seine"],
                                              max_new_tokens=4)
    for _ in evaluation.run():
        pass
    report = evaluation.report()
    ranked = report.models()
    assert sorted(m["model"] for m in ranked) == [BASE, "louvre", "seine"]
    assert {m["model"]: m["column"] for m in ranked}["seine"] == "eos_reward@seine"
    assert json.loads(report.to_json())["models"] == ranked


def _doctor_per_model(bundle) -> dict:
    """The doctor's teacher-forced p(EOS) on the base and each adapter (a fresh diagnosis: nothing cached)."""
    from playground.doctor.core import Context
    from playground.doctor.generation import check_p_eos_at_answer_end

    finding = check_p_eos_at_answer_end(Context(bundle, None, 512))
    assert "per_model" in finding.data, finding.found  # a check that failed says why instead
    return finding.data["per_model"]


def _doctor_beside_decodes(bundle, repetitions: int, tokens: int = 200) -> None:
    """One owner of the served model: a greedy base + louvre + seine decode of ``tokens`` while the doctor runs on
    each model in a loop (switching the served model's adapter for its teacher-forced passes). Every column decodes
    what it decodes alone and every doctor figure is the doctor's alone."""
    settings = Settings(max_new_tokens=tokens)
    # The adapters answer in 6 tokens: banning EOS keeps their rows (and the LoRA layers patched for the mixed
    # batch) in every step, beside the doctor's passes.
    variants = [Variant(BASE, model=BASE), *(Variant(m, ["ban_eos"], model=m) for m in ("louvre", "seine"))]
    alone = [compare(bundle, PARIS, [v], settings).variants[0].token_ids for v in variants]
    doctor_alone = _doctor_per_model(bundle)
    assert [len(ids) for ids in alone] == [tokens] * 3
    assert doctor_alone["louvre"] != doctor_alone[BASE] != doctor_alone["seine"]  # each model's own passes
    for repetition in range(repetitions):
        figures, failures, stop = [], [], threading.Event()

        def doctor():
            try:
                while not stop.is_set():
                    figures.append(_doctor_per_model(bundle))
            except Exception as error:  # e.g. its pass ran through LoRA layers patched for the decode's batch
                failures.append(error)

        thread = threading.Thread(target=doctor)
        thread.start()
        try:
            trace = compare(bundle, PARIS, variants, settings)
        finally:
            stop.set()
            thread.join()
        assert not failures, f"repetition {repetition}: the doctor failed: {failures[0]!r}"
        assert [v.token_ids for v in trace.variants] == alone, f"repetition {repetition}"
        assert figures and all(f == doctor_alone for f in figures), f"repetition {repetition}"


def test_the_doctor_beside_a_base_and_two_adapter_decode_changes_nothing(tuned):
    # Each decode step waits for one of the doctor's passes (they take turns on the model): 24 tokens keep it short;
    # the slow test below runs the 20 decodes of 200 tokens.
    _doctor_beside_decodes(tuned, repetitions=1, tokens=24)


@pytest.mark.slow
def test_the_doctor_beside_twenty_base_and_two_adapter_decodes_changes_nothing(tuned):
    _doctor_beside_decodes(tuned, repetitions=20)


def test_adding_and_removing_an_adapter_waits_for_the_rows_decoding(adapter_dirs):
    """An adapter added or removed while a run decodes on the base waits for its rows: the run decodes what it
    decodes alone, and a run that waited for a removed adapter stops with a sentence."""
    bundle = load_model()
    settings = Settings(max_new_tokens=48)
    alone = compare(bundle, PARIS, [Variant("baseline")], settings).variants[0].token_ids
    running = Comparison(bundle, PARIS, [Variant("baseline")], settings)
    done = threading.Event()
    running.submit(on_done=lambda _: done.set())
    while not running.trace.variants[0].token_ids:
        time.sleep(0.01)
    bundle.add_adapter("louvre", adapter_dirs["louvre"])  # wraps the base in PEFT: the first adapter
    assert done.wait(timeout=60)
    assert running.trace.variants[0].token_ids == alone  # no LoRA layer appeared under its steps
    waiting = Comparison(bundle, PARIS, [Variant("louvre", model="louvre")], settings)
    bundle.remove_adapter("louvre")
    with pytest.raises(RuntimeError, match="adapter 'louvre' was removed"):
        for _ in waiting.run():
            pass
