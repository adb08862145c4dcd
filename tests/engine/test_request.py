"""One request for every door: every door takes every setting with the schema's default and refuses a wrong value
with the same sentence; the Python API, the CLI and compare refuse an out-of-range value alike; every docstring
example in the package runs."""

from __future__ import annotations

import inspect
import re

import pytest

from playground.cli import build_parser, main, request_from_args
from playground.links import from_query, to_query
from playground.request import DEFAULTS, SETTINGS, check_setting, check_settings
from playground.service import Playground

PARIS = "What can I do in Paris?"
BAD = {int: "x", float: "x", bool: "maybe"}


@pytest.fixture(scope="module")
def app(tiny):
    from playground.ui import build_app

    return build_app(Playground(tiny))


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
