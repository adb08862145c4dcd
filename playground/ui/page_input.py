"""What the page's widgets send, read into requests: the column pickers (intervention chips and a model's
``@NAME`` chip) with their parameter boxes, and the doctor's model picker. Page formats only; the requests
themselves are :mod:`playground.service`'s."""

from __future__ import annotations

from collections.abc import Sequence

from ..request import Column, check_whole, column_from_page, shown


def page_columns(n_columns, pickers: Sequence, params: Sequence = ()) -> list[Column]:
    """The page's columns: the first ``n_columns`` pickers (each a list of intervention names, and at most one
    ``@NAME`` chip: the column's model) with their parameter boxes (``key=value, ...``; empty: the shared
    settings). ValueError naming the column on anything else.

    >>> [column.name for column in page_columns(2, [["eos_reward", "@base"], [], ["ban_eos"]], ["strength=8"])]
    ['eos_reward(strength=8)@base', 'baseline']
    """
    n_columns = check_whole(n_columns, "Columns", 1, len(pickers))
    columns = []
    params = list(params) + [""] * (len(pickers) - len(params))
    for index, picked in enumerate(pickers[:n_columns]):
        picked = [] if picked is None else [picked] if isinstance(picked, str) else picked
        if not isinstance(picked, (list, tuple)) or not all(isinstance(name, str) for name in picked):
            raise ValueError(f"Column {index + 1} interventions must be a list of intervention names, "
                             f"got {shown(picked)}")
        if params[index] is not None and not isinstance(params[index], str):
            raise ValueError(f"Column {index + 1} parameters must be text, got {shown(params[index])}")
        models = [name[1:] for name in picked if name.startswith("@")]
        if len(models) > 1:
            raise ValueError(f"Column {index + 1} runs on one model, got {', '.join('@' + m for m in models)}")
        try:
            columns.append(column_from_page([name for name in picked if not name.startswith("@")], params[index],
                                            models[0] if models else None))
        except ValueError as error:
            raise ValueError(f"column {index + 1}: {error}") from None
    return columns


def picked_model(playground, model) -> str:
    """The model a picker names as a column does (``"@NAME"`` or ``"NAME"``; empty or None: the model a column
    without ``@NAME`` runs); ValueError naming ``model`` when it is not loaded."""
    if model is None or (isinstance(model, str) and not model.strip()):
        return playground.bundle.default_model
    if not isinstance(model, str):
        raise ValueError(f"model must be the name of a loaded model (e.g. @base), got {shown(model)}")
    return playground.bundle.resolve_model(model.strip().removeprefix("@"))
