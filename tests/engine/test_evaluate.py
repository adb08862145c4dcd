"""Evaluate on the embedded model: columns over a small set (ban-EOS never stops by EOS, force_at_end never hits
the limit, the baseline equals generate()), a stronger ramp, sampling with k seeds, cancel, progress, bad
requests and the CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from playground.engine import Settings, Variant
from playground.evaluate.prompt_files import Prompt, PromptSet, builtin_prompts
from playground.evaluate.runner import Evaluation
from playground.evaluate.sweep import Sweep
from playground.prompts import encode_prompt


# -- real runs on the embedded model ------------------------------------------------------------------------------

SMALL_SET = PromptSet([
    Prompt([{"role": "user", "content": "What can I do in Paris?"}], "line 1"),
    Prompt([{"role": "user", "content": "What is the capital of France?"}], "line 2"),
    Prompt([{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."},
            {"role": "user", "content": "And 3 + 3?"}], "line 3"),
])


def greedy_generate(bundle, prompt: Prompt, max_new_tokens: int) -> list[int]:
    tokenizer = bundle.tokenizer
    if prompt.history:
        text = tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = encode_prompt(tokenizer, prompt.text)
    input_ids = torch.tensor([ids])
    out = bundle.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=bundle.info.stop_token_ids,
                                pad_token_id=tokenizer.pad_token_id)
    return [t for t in out[0, len(ids):].tolist() if t not in bundle.info.stop_token_ids]


def test_columns_over_a_small_set_on_the_embedded_model(smollm):
    max_new = 16
    columns = [Variant("baseline"), Variant("ban_eos", ["ban_eos"]),
               Variant("forced", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.5, "force_at_end": True}}])]
    evaluation = Evaluation(smollm, SMALL_SET, columns, Settings(max_new_tokens=max_new))
    progress = list(evaluation.run())
    assert progress == list(range(1, 10))
    report = evaluation.report()
    assert report.complete and len(report.rows) == 9
    baseline, ban, forced = report.summary()
    assert ban["eos_rate"]["rate"] == 0 and ban["limit_rate"]["rate"] == 1
    assert forced["limit_rate"]["rate"] == 0 and forced["eos_rate"]["rate"] == 1
    # The baseline's rows are what generate() gives, prompt by prompt (the multi-turn chat included).
    for index, prompt in enumerate(SMALL_SET.prompts):
        [row] = [r for r in report.rows if r.prompt == index and r.column == 0]
        expected = greedy_generate(smollm, prompt, max_new)
        assert row.length == len(expected)
        assert row.text == smollm.tokenizer.decode(expected)
    assert {r.stop_reason for r in report.rows_of(0)} == {"eos", "max_new_tokens"}  # Paris rambles, the others end
    data = json.loads(report.to_json())
    assert data["summary"][1]["column"] == "ban_eos" and len(data["prompts"]) == 3
    assert data["prompts"][2]["messages"][1]["role"] == "assistant"
    assert len(list(csv.reader(io.StringIO(report.rows_csv())))) == 1 + 9


def test_a_stronger_ramp_never_gives_longer_answers_at_the_same_start(smollm):
    prompts = builtin_prompts()
    prompts.prompts = [p for p in prompts.prompts if p.category == "open question"][:3]
    sweep = Sweep.parse("reward_start_ratio=0.25,0.5 strength=4,16")
    evaluation = Evaluation(smollm, prompts, sweep.variants(Variant("eos_reward", ["eos_reward"])),
                            Settings(max_new_tokens=16), sweep=sweep)
    for _ in evaluation.run():
        pass
    report = evaluation.report()
    cells = {(c["params"]["reward_start_ratio"], c["params"]["strength"]): c for c in report.sweep_cells()}
    assert len(cells) == 4
    for start in (0.25, 0.5):
        assert cells[(start, 16.0)]["mean_length"] <= cells[(start, 4.0)]["mean_length"]
        weak = {r.prompt: r.length for r in report.rows_of(cells[(start, 4.0)]["column"])}
        strong = {r.prompt: r.length for r in report.rows_of(cells[(start, 16.0)]["column"])}
        assert all(strong[p] <= weak[p] for p in weak)  # greedy: a larger EOS bonus can only stop sooner
    from playground.evaluate.charts import sweep_figure

    figure = sweep_figure(report)
    [heatmap] = figure.data  # start ratio down, strength across
    assert len(figure.layout.shapes) == 1  # the best cell's frame
    assert [list(row) for row in heatmap.z] == [[cells[(start, strength)]["clean_stop_rate"]["rate"] for strength in (4.0, 16.0)]
                                                for start in (0.25, 0.5)]
    best = report.best_cell()
    ranked = max(cells.values(), key=lambda c: (c["clean_stop_rate"]["rate"], c["mean_length"]))
    assert best["name"] == ranked["name"] and "clean-stop rate" in best["rule"]
    strength = best["params"]["strength"]
    assert f"strength={strength!r}" in best["code"] and "model.generate(" in best["code"]


def test_sampling_runs_every_prompt_with_k_seeds(smollm):
    from playground.engine import compare

    prompts = PromptSet(SMALL_SET.prompts[:1])
    settings = Settings(max_new_tokens=6, temperature=1.0, seed=7)
    evaluation = Evaluation(smollm, prompts, [Variant("baseline")], settings, seeds=3)
    for _ in evaluation.run():
        pass
    report = evaluation.report()
    assert report.seeds == [7, 8, 9] and sorted(r.seed for r in report.rows) == [7, 8, 9]
    alone = compare(smollm, prompts.prompts[0].text, [Variant("baseline")], Settings(max_new_tokens=6, temperature=1.0, seed=8))
    assert next(r.text for r in report.rows if r.seed == 8) == alone.variants[0].text


def test_cancel_keeps_the_rows_that_finished(smollm):
    columns = [Variant("baseline"), Variant("eos_reward", ["eos_reward"])]
    evaluation = Evaluation(smollm, SMALL_SET, columns, Settings(max_new_tokens=12))
    for done in evaluation.run():
        evaluation.cancel()
    report = evaluation.report()
    assert not report.complete and 1 <= len(report.rows) < evaluation.total
    assert all(r.stop_reason != "cancelled" for r in report.rows)
    assert report.to_dict()["rows_done"] == len(report.rows)


def test_bad_requests_are_sentences(smollm):
    from playground.service import Playground
    from playground.space.policy import Policy

    columns = [Variant("baseline")]
    with pytest.raises(ValueError, match="seeds: greedy decoding"):
        Evaluation(smollm, SMALL_SET, columns, Settings(max_new_tokens=8), seeds=3)
    with pytest.raises(ValueError, match="max_new_tokens must be between"):
        Evaluation(smollm, SMALL_SET, columns, Settings(max_new_tokens=0))
    too_long = PromptSet([Prompt([{"role": "user", "content": "word " * 9000}], "line 4"), *SMALL_SET.prompts[:1]])
    evaluation = Evaluation(smollm, too_long, columns, Settings(max_new_tokens=8))
    assert len(evaluation.prompts) == 1 and evaluation.problems[0].startswith("line 4: prompt is")
    public = Playground(smollm, policy=Policy(public=True, max_new_tokens=512, max_prompt_tokens=1024, max_columns=4))
    request = dict(max_new_tokens=512, temperature=0.0, top_p=1.0, top_k=0, seed=0, reward_start_ratio=0.8, strength=12)
    with pytest.raises(ValueError, match="evaluation too large for this public app: 30 prompts × 3 columns"):
        public.evaluation("builtin", [[], ["eos_reward"], ["ban_eos"]], **request)
    small = public.evaluation(["Hi", {"prompt": "Hello"}], [[], ["eos_reward"]], **{**request, "max_new_tokens": 8})
    assert small.total == 4


def test_cli_evaluate_prints_json_and_names_skipped_lines(smollm, monkeypatch, capsys, tmp_path):
    from playground.cli import main

    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    path = tmp_path / "prompts.csv"
    path.write_text("id,prompt\n1,What is the capital of France?\n2,\n", encoding="utf-8")
    assert main(["evaluate", "--prompts", str(path), "--max-new-tokens", "6", "--intervention", "ban_eos", "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert [c["name"] for c in data["columns"]] == ["baseline", "ban_eos"]
    assert data["summary"][1]["limit_rate"]["rate"] == 1.0
    assert "skipped: line 3: the 'prompt' cell is empty" in err
    assert main(["evaluate", "--sweep", "strength=oops"]) == 2
    assert "error: sweep: strength takes numbers, got 'oops'" in capsys.readouterr().err
    assert main(["evaluate", "--prompts", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl': No such file or directory" in capsys.readouterr().err


def test_progress_counts_tokens_and_rows_in_flight_before_any_row_finishes(tiny):
    evaluation = Evaluation(tiny, SMALL_SET, [Variant("ban_eos", ["ban_eos"])], Settings(max_new_tokens=24))
    seen = []
    for done in evaluation.run(heartbeat=0.001):  # a heartbeat yields while rows decode
        seen.append((done, evaluation.progress()))
    early = [p for done, p in seen if done == 0 and p["tokens"] > 0]
    assert early, "progress should move before the first row finishes"
    assert 1 <= early[-1]["in_flight"] <= 3 and early[-1]["seconds_left"] > 0
    last = seen[-1][1]
    assert last["done"] == last["total"] == 3 and last["in_flight"] == 0
    assert last["tokens"] == sum(r.length for r in evaluation.report().rows) == 3 * 24
    assert last["seconds_left"] == 0
