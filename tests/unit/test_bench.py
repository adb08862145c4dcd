"""``python -m playground bench``: its arguments, and what its last JSON line says about the targets."""

import json

import pytest

from playground.bench import run


def test_quick_runs_the_headline_parts_and_only_names_existing_parts(capsys):
    assert run.parse_args(["--quick"]).quick
    assert set(run.QUICK) <= set(run.PARTS)
    assert {part for _, part, *_ in run.TARGETS} <= set(run.PARTS)
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "engine,nope"])
    assert "no part named nope" in capsys.readouterr().err


def test_the_last_line_gives_each_measured_target_its_value_and_verdict(capsys):
    """One real (short) part end to end: the readable lines, then the JSON line with the machine's row fields."""
    assert run.main(["--only", "processors"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"bench version {run.BENCH_VERSION}, ")
    result = json.loads(lines[-1])
    assert {"cpu", "date", "bench_version", "load_average_before", "load_average_after"} <= set(result)
    speedup = result["processors"]["eos_reward_speedup_vs_literal_seed"]
    assert result["targets"] == {"eos_reward_speedup_vs_literal_seed": {
        "value": speedup, "target": ">= 1000", "met": speedup >= 1000}}
    assert any(line.startswith("targets met: ") for line in lines)


def test_a_figure_below_its_target_is_not_met():
    verdicts = run.verdicts({"adapters": {"1_threads": {"adapter_pair_vs_two_generates": 0.8},
                                          "2_threads": {"adapter_pair_vs_two_generates": 0.5}},
                             "page": {"page_fraction_of_engine": 0.79}})
    assert {name: v["met"] for name, v in verdicts.items()} == {
        "adapter_pair_vs_two_generates_1_thread": False, "adapter_pair_vs_two_generates_2_threads": True,
        "page_fraction_of_engine": False}
