"""One request for every door: the CLI, the API, links, the page's controls, Evaluate and the export take the same
settings with the same defaults and the same rules, and name the same columns the same way."""

from __future__ import annotations

import inspect
import re
import urllib.parse

import pytest

from playground.cli import build_parser, main, request_from_args
from playground.links import from_query, to_query
from playground.prompts import encode_prompt
from playground.request import (DEFAULTS, SETTINGS, check_setting, check_settings, column_from_json, column_to_json,
                                parse_column)
from playground.service import Playground

from tests.conftest import stream_compare
from tests.test_export import run_kwargs

PARIS = "What can I do in Paris?"
N = 24
# Two ramps at different strengths in one comparison, one with its own stop strings.
COLUMNS = ["baseline", "eos_reward(strength=30,reward_start_ratio=0.2)",
           'eos_reward(strength=8,reward_start_ratio=0.2)+stop_strings(strings=Light|"\\n")']
BAD = {int: "x", float: "x", bool: "maybe"}


@pytest.fixture(scope="module")
def app(tiny):
    from playground.ui import build_app

    return build_app(Playground(tiny))


def test_column_specs_read_back_what_they_write():
    for text in [*COLUMNS, "ban_eos@base", "eos_reward(at_boundary=true,schedule=exponential)+min_new_tokens(n=4)"]:
        column = parse_column(text)
        assert parse_column(column.name) == column_from_json(column_to_json(column)) == column
    # Older forms still name the same columns: names joined with "+", bare names in JSON.
    assert parse_column("eos_reward + stop_strings").name == column_from_json(["eos_reward", "stop_strings"]).name \
        == "eos_reward+stop_strings"
    assert column_from_json({"model": "base", "interventions": [{"name": "ban_eos"}]}).name == "ban_eos@base"


def test_every_door_takes_every_setting_with_the_schema_default(app):
    # The CLI: a flag per setting; nothing given means the schema's defaults.
    for command in ("compare", "export", "evaluate"):
        names = [name for name in SETTINGS if not (command == "evaluate" and name == "prompt")]
        given = [part for name in names for part in (SETTINGS[name].flag, SETTINGS[name].text(SETTINGS[name].default))]
        assert check_settings(request_from_args(build_parser().parse_args([command, *given]))) == DEFAULTS
        bare = build_parser().parse_args([command] + (["--prompt", PARIS] if command != "evaluate" else []))
        assert check_settings({**request_from_args(bare), "prompt": PARIS}) == {**DEFAULTS, "prompt": PARIS}
    # The API: a parameter per setting, with the schema's default (and so the docs gradio_client shows).
    functions = {f.api_name: f.fn for f in app.fns.values() if f.api_name}
    for api, names in [("compare", SETTINGS), ("export_code", SETTINGS), ("evaluate", [n for n in SETTINGS if n != "prompt"])]:
        parameters = inspect.signature(functions[api]).parameters
        assert {name: parameters[name].default for name in names} == {name: DEFAULTS[name] for name in names}, api
    # The page: Compare and Evaluate show each setting's control at its default.
    shown = {}
    for block in app.blocks.values():
        if str(getattr(block, "elem_id", None)).startswith("learn-"):  # a lesson's own controls take its preset
            continue
        shown.setdefault(getattr(block, "label", None), []).append(getattr(block, "value", None))
    for name, s in SETTINGS.items():
        # Max new tokens is labelled with the app's cap (its log-scale slider's number box)
        values = (shown.get(s.label, []) if name != "max_new_tokens" else
                  [v for label, vs in shown.items() if str(label).startswith(f"{s.label} (1 to ") for v in vs])
        expected = 1 if name == "prompt" else 2
        assert values == [s.default] * expected, name
    # A link: only what differs from the defaults, and nothing restores the defaults.
    assert to_query(DEFAULTS) == "" and from_query({})[0] | {"columns": None} == DEFAULTS | {"columns": None}


def test_a_wrong_value_gets_the_same_sentence_in_every_door(tiny, monkeypatch, capsys):
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: tiny)
    playground = Playground(tiny)
    for name, s in SETTINGS.items():
        if s.kind is str:
            continue
        bad = BAD[s.kind]
        with pytest.raises(ValueError) as error:
            check_setting(name, bad)
        sentence = str(error.value)
        assert sentence.startswith(name), sentence
        with pytest.raises(ValueError, match=f"^{re.escape(sentence)}$"):  # the page and the API go through here
            playground.comparison(PARIS, **{name: bad})
        assert from_query({name: bad})[1] == [f"{sentence}; kept {s.default!r}"]
        assert main(["compare", "--prompt", PARIS, s.flag, bad]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {sentence}"
    # A column's own parameter: the same sentence from a link, the CLI and the API's columns.
    spec = "eos_reward(strength=x)"
    with pytest.raises(ValueError) as error:
        playground.comparison(PARIS, ["baseline", spec])
    sentence = str(error.value)
    assert sentence == "column 2: eos_reward.strength must be a number from 0.0 to 100.0, got 'x'"
    assert from_query({"columns": "2", "c2": spec})[1] == [f"c2: {sentence.removeprefix('column 2: ')}; kept 'eos_reward'"]
    assert main(["compare", "--prompt", PARIS, "--column", "baseline", "--column", spec]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {sentence}"
    with pytest.raises(ValueError, match="column 1: model 'nope' is not loaded here; a column may use base"):
        playground.comparison(PARIS, ["baseline@nope"])


def test_the_same_request_through_every_door_gives_the_same_columns(smollm, app_server, monkeypatch, capsys):
    """CLI --json, /compare over gradio_client, Evaluate's row for the prompt and /export_code: the same column
    names, resolved parameters and tokens; two ramps of different strengths (one with its own stop strings) in one
    comparison each equal a plain generate() with that column's exported processors alone."""
    from gradio_client import Client

    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    args = ["compare", "--prompt", PARIS, "--max-new-tokens", str(N), "--json"]
    assert main([*args, *[part for column in COLUMNS for part in ("--column", column)]]) == 0
    import json

    cli = json.loads(capsys.readouterr().out)
    client = Client(app_server, verbose=False)
    api = stream_compare(client, prompt=PARIS, columns=[column_to_json(parse_column(c)) for c in COLUMNS],
                         max_new_tokens=N)[-1]
    names = [parse_column(c).name for c in COLUMNS]
    assert [v["name"] for v in cli["variants"]] == [v["name"] for v in api["variants"]] == names
    for mine, theirs in zip(cli["variants"], api["variants"]):
        assert mine["interventions"] == theirs["interventions"] and mine["token_ids"] == theirs["token_ids"]
    assert {k: cli["settings"][k] for k in ("max_new_tokens", "temperature", "seed")} == \
        {k: api["settings"][k] for k in ("max_new_tokens", "temperature", "seed")}
    ramps = [v["interventions"][0]["params"] for v in cli["variants"][1:]]
    assert [(r["strength"], r["reward_start_ratio"]) for r in ramps] == [(30.0, 0.2), (8.0, 0.2)]
    assert cli["variants"][2]["interventions"][1]["params"]["strings"] == ["Light", "\n"]
    assert cli["variants"][2]["stop_reason"] == "stop_string"  # its own stop strings, not the shared "\n\n"
    assert cli["variants"][1]["token_ids"] != cli["variants"][2]["token_ids"]

    # The export of each column, pasted above a plain generate() call, gives that column's tokens.
    prompt_ids = encode_prompt(smollm.tokenizer, PARIS)
    for column, variant in zip(COLUMNS[1:], cli["variants"][1:]):
        code = client.predict(prompt=PARIS, interventions=column, kind="kwargs", max_new_tokens=N, api_name="/export_code")
        assert f'"{variant["name"]}"' in code.splitlines()[0]
        assert run_kwargs(smollm, code, prompt_ids) == variant["token_ids"]

    # Evaluate's row for this prompt: the same columns and answers, and its "open in Compare" link holds them.
    evaluation = Playground(smollm).evaluation([PARIS], COLUMNS, max_new_tokens=N)
    for _ in evaluation.run():
        pass
    report = evaluation.report()
    assert [c.name for c in report.columns] == names
    assert [row.text for row in sorted(report.rows, key=lambda r: r.column)] == [v["text"] for v in cli["variants"]]
    from playground.evaluate.report import compare_query

    query = compare_query(report.prompts[0], report.columns, evaluation.settings, 0)
    linked, problems = from_query(dict(urllib.parse.parse_qsl(query[1:])))
    assert problems == [] and [c.name for c in linked["columns"]] == names and linked["max_new_tokens"] == N


@pytest.mark.slow
@pytest.mark.browser
def test_a_link_with_column_parameters_runs_the_same_columns_in_chromium(smollm, app_server, monkeypatch, capsys):
    from playground.bench.page import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    query = to_query({**DEFAULTS, "prompt": PARIS, "max_new_tokens": N, "columns": [parse_column(c) for c in COLUMNS]})
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    assert main(["compare", "--prompt", PARIS, "--max-new-tokens", str(N), "--json",
                 *[part for column in COLUMNS for part in ("--column", column)]]) == 0
    import json

    cli = json.loads(capsys.readouterr().out)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(app_server + "?" + query, wait_until="domcontentloaded")
        page.locator("#run").wait_for(timeout=60_000)
        page.wait_for_function("() => document.querySelector('#params-1 input, #params-1 textarea')?.value.includes('strength=30')",
                               timeout=30_000)
        assert "Light" in page.locator("#params-2 input, #params-2 textarea").first.input_value()
        page.locator("#run").click()
        page.wait_for_function("""() => [0, 1, 2].every(i => /stopped|hit max|stop string/.test(
                                   document.querySelector('#status-' + i).innerText))""", timeout=300_000)
        statuses = [page.locator(f"#status-{i}").inner_text() for i in range(3)]
        browser.close()
    for status, variant in zip(statuses, cli["variants"]):
        assert status.startswith(variant["name"])
        assert f"({len(variant['token_ids'])})" in status or f"step {len(variant['steps']) - 1}" in status


def test_the_readme_lists_every_setting_as_the_schema_declares_it():
    from pathlib import Path

    from playground.request import settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme  # regenerate: python -c "from playground.request import settings_table; print(settings_table())"


def test_docstring_examples_run():
    """Every example in the package's docstrings is part of the suite (a broken example is a broken promise);
    the engine's load the embedded model, as a user would."""
    import doctest
    import importlib
    import pkgutil

    import playground

    attempted = 0
    for info in pkgutil.walk_packages(playground.__path__, "playground."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 70  # 72 when written: a module whose examples stopped being found shows here


OUT_OF_RANGE = [(name, value) for name, s in SETTINGS.items() if s.low is not None
                for value in (s.low - 1, s.high + 1, float("nan"))]


@pytest.mark.parametrize("name, value", OUT_OF_RANGE, ids=[f"{n}={v}" for n, v in OUT_OF_RANGE])
def test_the_python_api_the_cli_and_compare_refuse_a_value_with_one_sentence(tiny, monkeypatch, capsys, name, value):
    """engine.Settings (the Python API), the CLI's flags and /compare (through the service, as the page and the API
    call it) take one range per setting and refuse a value outside it with one sentence."""
    from playground.engine import Settings

    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: tiny)
    with pytest.raises(ValueError) as error:
        Playground(tiny).comparison(PARIS, ["baseline", "eos_reward+min_new_tokens"], **{name: value})
    sentence = str(error.value)
    assert sentence.startswith(name + " must be"), sentence
    if name in {f for f in Settings.__dataclass_fields__}:
        with pytest.raises(ValueError, match=f"^{re.escape(sentence)}$"):
            Settings(**{name: value}).validate(vocab_size=tiny.info.vocab_size)
    text = SETTINGS[name].text(value)
    assert main(["compare", "--prompt", PARIS, f"{SETTINGS[name].flag}={text}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {sentence}"


def test_the_python_api_refuses_what_compare_refuses():
    from playground.engine import Settings

    with pytest.raises(ValueError, match=r"^temperature must be between 0 and 2, got 2.5$"):
        Settings(temperature=2.5).validate(vocab_size=49152)
