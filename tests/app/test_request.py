"""One request for every door: the same request through the CLI, the API, a link and Evaluate gives the same
columns, and the exported fix decodes them."""

from __future__ import annotations

import urllib.parse

from playground.cli import main
from playground.links import from_query
from playground.prompts import encode_prompt
from playground.request import column_to_json, parse_column
from playground.service import Playground
from tests.support import run_kwargs, stream_compare

PARIS = "What can I do in Paris?"
N = 24
# Two ramps at different strengths in one comparison, one with its own stop strings.
COLUMNS = ["baseline", "eos_reward(strength=30,reward_start_ratio=0.2)",
           'eos_reward(strength=8,reward_start_ratio=0.2)+stop_strings(strings=Light|"\\n")']


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
