"""Decode-step kernels chosen by measurement: measured once per CPU, thread count and batch size, cached and said;
one row uses only kernels that give the library's numbers bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from playground import kernels


def test_choices_are_measured_once_cached_per_cpu_and_said(tmp_path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 64, bias=False))
    cache = tmp_path / "decode-kernels.json"
    monkeypatch.setattr(kernels, "_tables", {})
    with kernels.DecodeKernels(model, cache=cache) as patched:
        for rows in (1, 2, 3):
            patched.use(rows)
            out = model(torch.ones(rows, 1, 64))
            assert out.shape == (rows, 1, 64)
    described = patched.describe()
    # 3 rows run with what 4 rows measured; the first batch of 2 rows measured the sizes a busy server meets
    assert set(described["choices"]) == {"1", "2", "4", "8", "16"}
    assert all(set(shapes) == {"32x64", "64x32"} and set(shapes.values()) <= set(kernels.CANDIDATES)
               for shapes in described["choices"].values())
    saved = json.loads(cache.read_text())
    assert [key.split(" | ")[0] for key in saved] == [kernels.cpu_name()]

    def measure_again(*args, **kwargs):
        raise AssertionError("a cached choice was measured again")

    monkeypatch.setattr(kernels, "_tables", {})  # a new process: only the file remembers
    monkeypatch.setattr(kernels, "measure", measure_again)
    with kernels.DecodeKernels(model, cache=cache) as patched:
        patched.use(4)
    assert patched.describe()["choices"] == described["choices"]
    assert "forward" not in model[0].__dict__  # leaving restores the library's forward


def test_one_row_uses_only_kernels_that_give_the_librarys_numbers_bit_for_bit():
    weight = torch.randn(48, 24)
    (chosen, seconds), = kernels.measure([weight], rows=1, rounds=1).values()
    x = torch.randn(1, 24)
    reference = torch.nn.functional.linear(x, weight)
    assert all(torch.equal(kernels.CANDIDATES[name](x, weight), reference) for name in seconds)
    assert chosen in seconds
    with pytest.raises(ValueError, match="decode kernel must be one of"):
        with kernels.forced("fastest"):
            pass
