"""Evaluate stop interventions over a prompt set: which fix stops this model best, in numbers.

Every (prompt, seed, column) becomes one single-row :class:`~playground.engine.Comparison`, and all of them go
through :func:`~playground.engine.run_all`, which decodes many comparisons together (rows join as others leave).
One row per comparison gives the shared loop the finest unit to pack, keeps a column's tokens independent of the
other columns (a lone row reproduces ``generate()`` exactly), lets a sweep have more cells than a comparison has
variants, and lets a multi-turn prompt be rendered per column. Each finished row is reduced to a
:class:`~playground.evaluate.metrics.RowResult` at once (its per-step telemetry is dropped), and
:class:`~playground.evaluate.report.Report` turns rows into rates.

- :mod:`~playground.evaluate.prompt_files`: prompt sets from a file (JSON lines, CSV, plain text), an API list or
  the built-in set; a line that cannot run is reported by its number.
- :mod:`~playground.evaluate.sweep`: :class:`~playground.evaluate.sweep.Sweep`, a grid of ``eos_reward`` settings,
  one column per cell.
- :mod:`~playground.evaluate.metrics`: one decoded row reduced to a
  :class:`~playground.evaluate.metrics.RowResult`, and a column's rates (with Wilson intervals) and lengths.
- :mod:`~playground.evaluate.report`: :class:`~playground.evaluate.report.Report`, the summary, the sweep's best
  cell with its code, JSON and CSV, and the link that opens a row in Compare.
- :mod:`~playground.evaluate.runner`: :class:`~playground.evaluate.runner.Evaluation`, which validates everything
  up front and decodes the rows, and the public mode's token budget.
- :mod:`~playground.evaluate.charts`: plotly figures of a report.
"""
