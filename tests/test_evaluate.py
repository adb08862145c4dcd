"""Evaluate: metrics by hand on synthetic traces, prompt files with bad lines, real runs on the embedded model
(ban-EOS never stops by EOS, force_at_end never hits the limit, the baseline equals generate()), the sweep, the
CLI and the API, and the tab in real Chromium."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import urllib.parse
from pathlib import Path

import pytest
import torch

from playground.engine import Settings, Variant
from playground.evaluate.metrics import column_summary, has_loop, row_result
from playground.evaluate.prompt_files import Prompt, PromptSet, builtin_prompts, parse_prompts, read_prompts
from playground.evaluate.report import Report, compare_query
from playground.evaluate.runner import Evaluation
from playground.evaluate.sweep import Sweep
from playground.interventions import ends_sentence
from playground.prompts import encode_prompt
from playground.trace import StepRecord, VariantTrace

EOS = 2


def variant_trace(ids, p_raw, text, stop_reason, wall=1.0, stop_detail=None) -> VariantTrace:
    steps = [StepRecord(step=i, token_id=t, token="", p_eos_raw=0.0, p_eos=0.0, p_chosen_raw=p, p_chosen=p,
                        entropy_raw=0.0, entropy=0.0, top_k=[]) for i, (t, p) in enumerate(zip(ids, p_raw))]
    return VariantTrace("column", [], prompt_tokens=5, token_ids=list(ids), text=text, steps=steps,
                        stop_reason=stop_reason, stop_detail=stop_detail, wall_seconds=wall)


def synthetic_rows():
    return [
        # EOS right after a sentence: a clean stop; the EOS step counts for speed, not for length or NLL.
        row_result(variant_trace([10, 11, 12, EOS], [0.5, 0.25, 1.0, 0.01], "Paris is nice.", "eos"), prompt=0, column=0, seed=0),
        # The limit, inside a loop of a 4-token block repeated 4 times.
        row_result(variant_trace([5, 6, 7, 8] * 4, [0.5] * 16, "la la la la", "max_new_tokens"), prompt=1, column=0, seed=0),
        # A stop string cut the answer before its end: mid-sentence.
        row_result(variant_trace([20, 21], [0.1, 0.2], "Here is a list:", "stop_string", stop_detail="\n\n"), prompt=2, column=0, seed=0),
        # EOS as the very first token: an empty answer, not a clean stop.
        row_result(variant_trace([EOS], [0.9], "", "eos"), prompt=3, column=0, seed=0),
    ]


def test_metrics_on_a_synthetic_trace_equal_the_hand_computed_values():
    rows = synthetic_rows()
    assert [r.length for r in rows] == [3, 16, 2, 0]
    assert [r.loops for r in rows] == [False, True, False, False]
    assert [r.clean_stop for r in rows] == [True, False, False, False]
    assert rows[0].nll == pytest.approx(math.log(2) + math.log(4))
    s = column_summary("column", rows)
    assert s["rows"] == 4
    assert s["eos_rate"]["rate"] == 0.5 and s["limit_rate"]["rate"] == 0.25
    assert s["stop_string_rate"]["rate"] == 0.25 and s["loop_rate"]["rate"] == 0.25
    assert s["mid_sentence_rate"]["rate"] == 0.75 and s["clean_stop_rate"]["rate"] == 0.25
    # Wilson 95 % for 1 of 4 is (0.0456, 0.6994); for 2 of 4 (0.1500, 0.8500).
    assert (s["clean_stop_rate"]["low"], s["clean_stop_rate"]["high"]) == pytest.approx((0.0456, 0.6994), abs=1e-4)
    assert (s["eos_rate"]["low"], s["eos_rate"]["high"]) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert s["mean_length"] == 21 / 4
    assert s["median_length"] == 2.5  # between 2 and 3
    assert s["p90_length"] == pytest.approx(3 + 0.7 * 13)  # rank 2.7 of [0, 2, 3, 16]
    # NLL per token: (ln 2 + ln 4) + 16 ln 2 + (ln 10 + ln 5), over 3 + 16 + 2 tokens; EOS steps excluded.
    assert s["nll_per_token"] == pytest.approx((19 * math.log(2) + math.log(50)) / 21)
    assert s["tokens_per_second"] == pytest.approx(23 / 4)  # 4 + 16 + 2 + 1 steps over 4 s
    assert s["stop_reasons"] == {"eos": 2, "max_new_tokens": 1, "stop_string": 1, "repetition": 0, "timeout": 0}


def test_sentence_ends_and_loops():
    assert all(map(ends_sentence, ["Done.", 'He said "stop."', "Really?!", "終わり。", "```python\nx = 1\n```\n"]))
    assert not any(map(ends_sentence, ["I think that", "", "Here is a list:", "1. Eiffel Tower\n2"]))
    assert has_loop([1, 2] * 8) and has_loop([7] * 16) and has_loop(list(range(10)) + [3, 4, 5, 6, 7, 8] * 3)
    assert not has_loop([1, 2] * 7)  # 14 tokens: under the 16-token floor
    assert not has_loop(list(range(100)))
    assert not has_loop([1, 2, 3, 4, 5, 6, 7, 8] * 2)  # twice is not a loop


# -- prompt files ---------------------------------------------------------------------------------------------


def test_jsonl_bad_lines_are_named_and_good_lines_run(tmp_path):
    lines = [
        b'{"prompt": "What is the capital of France?"}',
        b'{"prompt": "unclosed',
        b'{"question": "wrong key"}',
        b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
        b'{"prompt": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"prompt": "' + b"x" * 50 + b'"}',
        b"",
        b'{"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4."}, '
        b'{"role": "user", "content": "And 3 + 3?"}]}',
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    prompts = read_prompts(path, max_chars=40)
    assert [p.text for p in prompts.prompts] == ["What is the capital of France?", "And 3 + 3?"]
    assert [p.where for p in prompts.prompts] == ["line 1", "line 8"]
    assert prompts.prompts[1].history[-1] == {"role": "assistant", "content": "4."}
    problems = "\n".join(prompts.problems)
    assert "line 2: not valid JSON" in problems
    assert "line 3: needs a 'prompt' string or a 'messages' list; found keys: question" in problems
    assert "line 4: the last message must be the user's" in problems
    assert "line 5: not UTF-8 text" in problems
    assert "line 6: the prompt is 50 characters; at most 40" in problems
    assert len(prompts.problems) == 5


def test_csv_text_empty_and_oversized_files(tmp_path):
    ok = parse_prompts(b'id,Prompt\n1,"Hello, there"\n2,\n3,Why is the sky blue?\n', "csv")
    assert [p.text for p in ok.prompts] == ["Hello, there", "Why is the sky blue?"]
    assert ok.problems == ["line 3: the 'prompt' cell is empty; skipped"]
    wrong = parse_prompts(b"question,answer\nWhy?,Because\n", "csv")
    assert wrong.prompts == [] and wrong.problems == ["line 1: the CSV header needs a 'prompt' column; found 'question', 'answer'"]
    assert parse_prompts(b"  \n", "text").problems == ["line 1: the file is empty — put one prompt per line"]
    text = parse_prompts(b"First prompt\n\n\xff\xfe\nSecond prompt\r\n", "text")
    assert [p.text for p in text.prompts] == ["First prompt", "Second prompt"]
    assert text.problems[0].startswith("line 3: not UTF-8 text")
    big = tmp_path / "big.txt"
    big.write_text("".join(f"prompt number {i}\n" for i in range(100)), encoding="utf-8")
    capped = read_prompts(big, max_bytes=100)
    assert [p.text for p in capped.prompts] == [f"prompt number {i}" for i in range(6)]
    assert capped.problems == ["line 7: the file is over the cap of 100 bytes; lines from 7 on were not read"]


def test_the_builtin_set_ships_with_the_package_and_varies():
    from playground.space.deploy import upload_files

    prompts = builtin_prompts()
    assert prompts.problems == [] and len(prompts.prompts) >= 30
    categories = {p.category for p in prompts.prompts}
    assert {"open question", "short answer", "yes/no", "list", "code", "poem", "multilingual", "multi-turn chat"} <= categories
    assert sum(bool(p.history) for p in prompts.prompts) >= 2
    assert "playground/data/prompts.jsonl" in upload_files()


def test_sweep_parsing():
    sweep = Sweep.parse(["reward_start_ratio=0.3,0.5,0.7", "strength=4,8,12,16", "at_boundary=true,false"])
    assert len(sweep.cells()) == 24
    assert sweep.cells()[0] == {"reward_start_ratio": 0.3, "strength": 4.0, "at_boundary": True}
    variants = sweep.variants(Variant("eos_reward+stop_strings", [{"name": "eos_reward"}, {"name": "stop_strings"}]))
    assert variants[0].name == "baseline" and len(variants) == 25
    assert variants[1].name == "eos_reward(reward_start_ratio=0.3,strength=4,at_boundary=true)+stop_strings"
    for bad, message in [("strength=x", "strength takes numbers"), ("at_boundary=on", "at_boundary must be true or false"), ("temperature=1", "not an eos_reward parameter"),
                         ("strength", "PARAMETER=V1,V2"), ("strength=200", "strength must be")]:
        with pytest.raises(ValueError, match=message):
            Sweep.parse(bad)


def test_compare_query_opens_the_prompt_with_the_same_columns():
    settings = Settings(max_new_tokens=48, temperature=0.7)
    columns = [Variant("baseline"), Variant("eos_reward(reward_start_ratio=0.3)+stop_strings",
                                            [{"name": "eos_reward", "params": {"reward_start_ratio": 0.3}}, "stop_strings"])]
    query = compare_query(Prompt([{"role": "user", "content": "Où aller à Paris ?"}]), columns, settings, seed=3)
    assert urllib.parse.parse_qs(query[1:]) == {
        "prompt": ["Où aller à Paris ?"], "columns": ["2"], "c1": ["baseline"],
        "c2": ["eos_reward(reward_start_ratio=0.3)+stop_strings"],
        "max_new_tokens": ["48"], "temperature": ["0.7"], "seed": ["3"]}
    chat = Prompt([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    assert compare_query(chat, columns, settings, seed=0) is None
    # A parameter the page has no shared control for travels in the column's own spec.
    forced = [Variant("eos_reward", [{"name": "eos_reward", "params": {"force_at_end": True}}])]
    query = compare_query(Prompt([{"role": "user", "content": "a"}]), forced, settings, seed=0)
    assert urllib.parse.parse_qs(query[1:])["c1"] == ["eos_reward(force_at_end=true)"]


def test_charts_of_a_synthetic_report():
    from playground.evaluate.charts import length_figure, stop_reasons_figure

    rows = synthetic_rows()
    for index, row in enumerate(rows):
        row.column = index % 2
    prompts = [Prompt([{"role": "user", "content": f"p{i}"}]) for i in range(4)]
    report = Report(model="m", model_reference="default", settings=Settings(max_new_tokens=16).to_dict(), seeds=[0],
                    prompts=prompts, columns=[Variant("baseline"), Variant("eos_reward", ["eos_reward"])], rows=rows,
                    problems=[])
    lengths = length_figure(report)
    assert [list(t.y) for t in lengths.data] == [[3, 2], [16, 0]]
    reasons = stop_reasons_figure(report)
    shares = {t.name: list(t.y) for t in reasons.data}
    assert shares == {"eos": [0.5, 0.5], "max_new_tokens": [0.0, 0.5], "stop_string": [0.5, 0.0]}


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


def test_evaluate_api_streams_progress_then_the_report(app_server):
    from gradio_client import Client

    client = Client(app_server, verbose=False)
    job = client.submit(api_name="/evaluate", prompts=["What is the capital of France?", {"prompt": " "}],
                        columns=[[], ["ban_eos"]], max_new_tokens=4)
    events = list(job)
    assert events[0] == {"done": 0, "total": 2, "problems": ["item 2: the prompt is empty; skipped"], "report": None}
    final = events[-1]
    assert final["done"] == 2 and final["report"]["complete"]
    assert [c["column"] for c in final["report"]["summary"]] == ["baseline", "ban_eos"]
    with pytest.raises(Exception, match="sweep: strength takes numbers"):
        client.predict(api_name="/evaluate", prompts="builtin", sweep="strength=x")


def test_a_closed_evaluation_stops_and_frees_its_rows_within_seconds(app_server):
    """Longer prompts (about 300 tokens, so each row's prefill takes a while): once the client cancels, no row joins
    any more, and the rows and KV cache are freed within seconds (before: the 32 rows already admitted were
    prefilled one after another, the KV cache growing, for most of a minute)."""
    import time

    from gradio_client import Client

    client = Client(app_server, verbose=False)
    prompts = [f"Story {i}: " + "the quick brown fox jumps over the lazy dog " * 30 + "Summarise it." for i in range(40)]
    job = client.submit(api_name="/evaluate", prompts=prompts, columns=[[], ["ban_eos"]], max_new_tokens=4)
    deadline = time.time() + 120
    while client.predict(api_name="/info")["kv_in_use_mb"] == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert client.predict(api_name="/info")["active_generations"] == 1, "the evaluation did not start"
    job.cancel()
    closed, held = time.time(), None
    while time.time() - closed < 60:
        info = client.predict(api_name="/info")
        held = {key: info[key] for key in ("active_generations", "rows_in_flight", "rows_waiting", "kv_in_use_mb")}
        if not any(held.values()):
            break
        time.sleep(0.1)
    seconds = time.time() - closed
    print(f"\nfreed {seconds:.1f} s after the cancel: {held}")
    assert not any(held.values()) and seconds < 10


# -- the page -----------------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_evaluate_tab_uploads_runs_and_downloads(app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    from playground.bench.page import CHROMIUM_ARGS
    from tests.test_browser import ARTIFACTS, fill_and_keep, open_page

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is the capital of France?"}\n{"prompt": "What can I do in Paris?"}\nnot json\n',
                       encoding="utf-8")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = open_page(browser, app_server, height=2000)
        try:
            page.get_by_role("tab", name="Evaluate").click()
            page.locator("#evaluate-file input[type=file]").set_input_files(str(prompts))
            page.locator("#evaluate-file").get_by_label("prompts.jsonl").wait_for(timeout=30_000)  # uploaded
            fill_and_keep(page.locator("#evaluate-max-new input[type=number]"), "8")
            page.locator("#evaluate-column-params").get_by_text("Each column's own parameters").click()  # column 2's own strength
            fill_and_keep(page.locator("#evaluate-params-1 textarea, #evaluate-params-1 input").first, "strength=4")
            page.locator("#evaluate-run").click()
            page.locator("#evaluate-status").get_by_text("4 of 4 rows").wait_for(timeout=180_000)
            assert "eos_reward(strength=4)" in page.locator("#evaluate-summary").inner_text()
            page.wait_for_function("() => document.querySelectorAll('#evaluate-lengths .js-plotly-plot, "
                                   "#evaluate-reasons .js-plotly-plot').length == 2", timeout=30_000)
            assert "line 3: not valid JSON" in page.locator("#evaluate-status").inner_text()
            assert page.locator("#evaluate-prompts tbody tr").count() == 2
            link = page.locator("#evaluate-prompts a.open-compare").first.get_attribute("href")
            assert urllib.parse.parse_qs(link[1:])["c2"] == ["eos_reward(strength=4)"]
            with page.expect_download() as download:
                page.locator("#evaluate-json").click()
            report = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
            assert report["rows_done"] == 4 and report["settings"]["max_new_tokens"] == 8
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "evaluate.png"), full_page=True)
            browser.close()


def start_evaluation(browser, url: str, max_new_tokens: str = "32"):
    """A page that starts an evaluation of the built-in prompts (long enough to act on while it runs)."""
    from tests.test_browser import fill_and_keep, open_page

    page = open_page(browser, url)
    page.get_by_role("tab", name="Evaluate").click()
    fill_and_keep(page.locator("#evaluate-max-new input[type=number]"), max_new_tokens)
    page.locator("#evaluate-run").click()
    return page


def wait_for_info(client, key: str, wanted, seconds: float = 120) -> float:
    """Seconds until /info's ``key`` is ``wanted`` (AssertionError after ``seconds``)."""
    import time

    start = time.time()
    while client.predict(api_name="/info")[key] != wanted:
        assert time.time() - start < seconds, f"{key} is not {wanted} after {seconds} s"
        time.sleep(0.1)
    return time.time() - start


def elsewhere_on_a_new_page(browser, url: str):
    """A second page on the Evaluate tab, and what it says about evaluations it did not start."""
    from tests.test_browser import open_page

    page = open_page(browser, url)
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_timeout(1500)  # the tab's select event fills the note
    return page, page.locator("#evaluate-elsewhere").inner_text()


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_a_local_page_sees_and_stops_an_evaluation_it_did_not_start_and_a_closed_one_stops(app_server):
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from playground.bench.page import CHROMIUM_ARGS

    client = Client(app_server, verbose=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            first = start_evaluation(browser, app_server)
            wait_for_info(client, "active_generations", 1)
            second, note = elsewhere_on_a_new_page(browser, app_server)
            assert "An evaluation started elsewhere (another page or a program) is running" in note
            second.locator("#evaluate-stop").click()
            first.locator("#evaluate-status").get_by_text("stopped").wait_for(timeout=120_000)  # its report says so
            assert wait_for_info(client, "active_generations", 0, 30) < 30
            # A page that starts one and closes: Gradio closes the handler, which stops the evaluation.
            third = start_evaluation(browser, app_server)
            wait_for_info(client, "active_generations", 1)
            third.close()
            seconds = wait_for_info(client, "active_generations", 0, 60)
            print(f"\nthe closed page's evaluation stopped {seconds:.1f} s after the close")
            assert seconds < 15 and client.predict(api_name="/info")["rows_in_flight"] == 0
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_a_public_page_sees_and_stops_only_its_own_evaluation(public_app_server):
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from playground.bench.page import CHROMIUM_ARGS

    client = Client(public_app_server, verbose=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            first = start_evaluation(browser, public_app_server, "16")
            wait_for_info(client, "active_generations", 1)
            second, note = elsewhere_on_a_new_page(browser, public_app_server)
            assert note.strip() == ""  # a stranger's evaluation is not shown
            second.locator("#evaluate-stop").click()
            second.wait_for_timeout(3000)
            assert client.predict(api_name="/info")["active_generations"] == 1  # nor stopped by another page
            first.locator("#evaluate-stop").click()  # its own page stops it
            first.locator("#evaluate-status").get_by_text("stopped").wait_for(timeout=120_000)
            assert wait_for_info(client, "active_generations", 0, 30) < 30
        finally:
            browser.close()


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
