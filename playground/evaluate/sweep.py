"""A sweep: a grid of ``eos_reward`` settings (``reward_start_ratio=0.3,0.5 strength=4,8``), one column per cell
beside the baseline."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine import Variant
from ..interventions import Intervention, default_params, parse_interventions
from ..request import Column, format_column, parse_bool

# Every mode: a sweep has at most this many cells (columns: the baseline and one per cell), counted before any
# cell is built, and its text at most MAX_SWEEP_CHARS.
MAX_SWEEP_CELLS = 64
MAX_SWEEP_CHARS = 2000
SWEEPABLE = tuple(default_params("eos_reward"))


def _sweep_value(key: str, text: str):
    text = text.strip()
    if key in ("at_boundary", "force_at_end"):
        return parse_bool(text, f"sweep: {key}")
    if key == "schedule":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"sweep: {key} takes numbers, got {text!r}") from None


@dataclass
class Sweep:
    """A grid of ``eos_reward`` settings: parameter → values, in the order given. Each cell is one column."""

    grid: dict[str, list]

    @classmethod
    def parse(cls, specs: Sequence[str] | str, max_cells: int = MAX_SWEEP_CELLS) -> Sweep:
        """From ``["reward_start_ratio=0.3,0.5", "strength=4,8", "at_boundary=true,false"]`` (or one space-separated
        string). The number of cells is checked (at most ``max_cells``) before any cell is built; every cell is
        validated like any eos_reward setting."""
        shape = "sweep: write PARAMETER=V1,V2,... items, e.g. \"reward_start_ratio=0.3,0.5 strength=4,8\""
        if not isinstance(specs, (str, list, tuple)) or not all(isinstance(spec, str) for spec in specs):
            raise ValueError(shape)
        length = len(specs) if isinstance(specs, str) else sum(len(spec) + 1 for spec in specs)
        if length > MAX_SWEEP_CHARS:
            raise ValueError(f"sweep is {length} characters long; at most {MAX_SWEEP_CHARS} are read "
                             f"(a sweep has at most {max_cells} cells)")
        if isinstance(specs, str):
            specs = specs.split()
        counts = [len({v.strip() for v in spec.partition("=")[2].split(",") if v.strip()}) for spec in specs]
        if math.prod(counts) > max_cells:
            raise ValueError(f"sweep: {' × '.join(map(str, counts))} = {math.prod(counts):,} cells; at most {max_cells} "
                             "(each cell is one column of every prompt): give fewer values")
        grid: dict[str, list] = {}
        for spec in specs:
            key, sep, values = spec.partition("=")
            key = key.strip()
            if not sep or not values.strip():
                raise ValueError(f"sweep: write PARAMETER=V1,V2,... (e.g. strength=4,8,12), got {spec!r}")
            if key not in SWEEPABLE:
                raise ValueError(f"sweep: {key!r} is not an eos_reward parameter; sweepable: {', '.join(SWEEPABLE)}")
            if key in grid:
                raise ValueError(f"sweep: {key} is given twice")
            grid[key] = list(dict.fromkeys(_sweep_value(key, v) for v in values.split(",") if v.strip()))
        if not grid:
            raise ValueError("sweep: give at least one PARAMETER=V1,V2,...")
        sweep = cls(grid)
        for cell in sweep.cells():
            try:
                parse_interventions([{"name": "eos_reward", "params": cell}])
            except ValueError as error:
                raise ValueError(f"sweep: {error}") from None
        return sweep

    def cells(self) -> list[dict]:
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def variants(self, base: Variant) -> list[Variant]:
        """Baseline, then one column per cell: ``base``'s interventions with eos_reward's parameters set by the
        cell, named by its column spec (``eos_reward(strength=4)+stop_strings``)."""
        items = parse_interventions(list(base.interventions))
        if not any(item.name == "eos_reward" for item in items):
            raise ValueError("sweep: the swept column must include eos_reward")
        variants = [Variant("baseline", [], model=base.model)]
        for cell in self.cells():
            column = [Intervention(i.name, {**i.params, **cell}) if i.name == "eos_reward" else i for i in items]
            name = format_column(Column(tuple(Intervention(i.name, cell if i.name == "eos_reward" else {}) for i in items),
                                        base.model))
            variants.append(Variant(name, column, model=base.model))
        return variants

    def to_dict(self) -> dict:
        return {"grid": {key: list(values) for key, values in self.grid.items()}}
