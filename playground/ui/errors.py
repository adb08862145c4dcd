"""Refusing a visitor's input: one log line instead of a traceback, and a message that says what to fix.

Gradio 6.31 heads every error toast "Error" and drops ``gr.Error(title=...)`` (the toast shows its type, not
its title), so on the page the title opens the message in bold; a program (gradio_client, the REST route) gets
the bare sentence, with the title in the error's ``title`` field. Each title says what happened (a bad value, a
busy server, a model that did not load), never more than the sentence under it.

Every door of the app — each event, named, unnamed or private, and each REST route — refuses through
:func:`refusal`: :class:`Doors` checks the values a request sends before Gradio reads them into its components
(whose own messages, "Value -1 is less than minimum value 1." or a bare "Error", name no field), and answers an
unknown or missing parameter with a sentence instead of "Internal Server Error".
"""

from __future__ import annotations

import html
import inspect
import re
from pathlib import Path

import gradio as gr
from fastapi import Request
from fastapi.responses import JSONResponse

from ..request import check_choice, check_number, check_text, parse_bool, shown
from ..service import Busy, Playground

CHECK_INPUT = "Check your input"
RUN_STOPPED = "Run stopped"
BUSY = "Busy — try again when it has finished"
MODEL_NOT_LOADED = "Model not loaded — the previous model is still in use"


def not_added(kind: str) -> str:
    """The title of a refused Add adapter / Add checkpoint: what did not happen, and that nothing changed."""
    return f"{kind.capitalize()} not added — the loaded models are unchanged"


def from_page(event: gr.EventData | None) -> bool:
    """Whether the page's own component triggered the event (a program's call names no trigger)."""
    return event is not None and event.target is not None


def refusal(playground: Playground, endpoint: str, error: BaseException, *, title: str = CHECK_INPUT,
            page: bool) -> gr.Error:
    """The gr.Error to raise for a handled input error (log: one line; no traceback, since nothing is broken).
    A :class:`~playground.service.Busy` refusal is titled as one whatever the door: the input was fine."""
    message = playground.refused(endpoint, error)
    title = BUSY if isinstance(error, Busy) else title
    if page:
        message = f"<strong>{html.escape(title)}</strong><br>{html.escape(message)}"
    return gr.Error(message, title=title, print_exception=False)


def stopped(playground: Playground, error: BaseException, *, page: bool) -> gr.Error:
    """The gr.Error for a run the decode loop stopped (out of memory, a failed step): its sentence, no traceback."""
    message = playground.user_message(error)
    if page:
        message = f"<strong>{RUN_STOPPED}</strong><br>{html.escape(message)}"
    return gr.Error(message, title=RUN_STOPPED, print_exception=False)


# ---- every door -----------------------------------------------------------------------------------------------


def parameter_names(fn) -> list[str]:
    """A handler's parameters as the API names them (gr.EventData, gr.Progress and gr.Request are not sent)."""
    names = []
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or \
                isinstance(parameter.default, gr.Progress) or \
                parameter.annotation in (gr.EventData, gr.Request, "gr.EventData", "gr.Request", "gr.EventData | None"):
            continue
        names.append(name)
    return names


def is_file_data(value) -> bool:
    """Whether Gradio would read ``value`` as a file (a FileData object: it copies the path into its cache)."""
    return isinstance(value, dict) and isinstance(value.get("meta"), dict) and \
        value["meta"].get("_type") == "gradio.FileData"


def check_upload(value, name: str) -> None:
    """A file a request sends: none, or one uploaded to this app (its upload folder); never a path elsewhere."""
    if value is None or value == "":
        return
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name} must be an uploaded file (upload it first), got {shown(value, 40)}")
    root = Path(gr.utils.get_upload_folder()).resolve()
    if not Path(path).resolve().is_relative_to(root):
        raise ValueError(f"{name} must be a file uploaded to this app (upload it first); "
                         f"{Path(path).name!r} was not uploaded here")


def check_value(component, value, name: str) -> None:
    """What a component of kind ``component`` can read, checked before Gradio reads it: a sentence naming ``name``
    instead of the component's own message. Dropdowns that take any value (allow_custom_value) are checked by the
    handler (a loaded adapter's name, say)."""
    if isinstance(component, gr.File):
        check_upload(value, name)
    elif isinstance(component, gr.Number):
        if value is not None:
            check_number(value if not isinstance(value, str) else None if not value.strip() else value, name,
                         component.minimum if component.minimum is not None else -float("inf"), component.maximum,
                         whole=component.precision == 0)
    elif isinstance(component, gr.Checkbox):
        parse_bool(value, name)
    elif isinstance(component, gr.Dropdown):
        if value is not None and not component.allow_custom_value and not component.multiselect:
            check_choice(value, name, [choice[1] if isinstance(choice, tuple) else choice for choice in component.choices])
        elif value is not None and not component.multiselect:
            check_text(value, name)
    elif isinstance(component, gr.Textbox):
        check_text(value, name)
    elif any(is_file_data(item) for item in (value if isinstance(value, list) else [value])):
        check_upload(value if is_file_data(value) else next(i for i in value if is_file_data(i)), name)


class Doors(gr.Blocks):
    """The app's Blocks: every event checks what a request sends through :func:`refusal` before Gradio reads it,
    and the REST routes answer an unknown or missing parameter with a sentence."""

    def __init__(self, playground: Playground, **kwargs):
        super().__init__(**kwargs)
        self.playground = playground

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        route = block_fn.api_name or block_fn.name or "event"  # named bare in sentences: "/x" reads as a path
        endpoint = "/" + route
        names = parameter_names(block_fn.fn) if block_fn.fn is not None else []
        names += [f"value {index + 1}" for index in range(len(names), len(block_fn.inputs))]
        try:
            if len(inputs) < len(block_fn.inputs):
                raise ValueError(f"{names[len(inputs)]} is missing: {route} takes {', '.join(names)}")
            if len(inputs) > len(block_fn.inputs) and block_fn.js is None:
                raise ValueError(f"{route} takes {len(block_fn.inputs)} values ({', '.join(names) or 'none'}), "
                                 f"got {len(inputs)}")
            for component, value, name in zip(block_fn.inputs, inputs, names):
                if component.stateful:  # the server's own value, not sent
                    continue
                if state is not None and component._id in state:  # this page's copy (choices updated since)
                    component = state[component._id]
                check_value(component, value, name)
        except ValueError as error:
            raise refusal(self.playground, endpoint, error, page=False) from None
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except Exception as error:  # what the checks above did not foresee: still a sentence, not a traceback
            raise refusal(self.playground, endpoint, ValueError(
                f"{route}: one of {', '.join(names)} could not be read ({type(error).__name__})"), page=False) from None

    def launch(self, *args, **kwargs):
        handlers = dict((kwargs.get("app_kwargs") or {}).get("exception_handlers") or {})
        handlers[TypeError] = handlers[KeyError] = self._route_refusal
        kwargs["app_kwargs"] = {**(kwargs.get("app_kwargs") or {}), "exception_handlers": handlers}
        return super().launch(*args, **kwargs)

    async def _route_refusal(self, request: Request, error: Exception) -> JSONResponse:
        """Gradio's keyword route (/gradio_api/call/v2/NAME) raises TypeError for an unknown or missing parameter
        and KeyError for an unknown endpoint, which the server would answer "Internal Server Error"."""
        route = re.search(r"/call/v2/([^/]+)", request.url.path)
        if route is None:
            raise error
        name = route.group(1)
        endpoint = "/" + name
        text = str(error)
        unknown = re.search(r"Parameter `([^`]*)` is not a valid key-word argument", text)
        twice = re.search(r"Parameter `([^`]*)` is already set", text)
        missing = re.search(r"No value provided for required argument: (\S+)", text)
        fn = next((f for f in self.fns.values() if f.api_name == route.group(1) and f.api_visibility == "public"), None)
        known = ", ".join(parameter_names(fn.fn)) if fn is not None and fn.fn is not None else ""
        if fn is None:
            reason = ValueError(f"{shown(name, 40)} is not an endpoint of this app (see the API page)")
        elif unknown:
            reason = ValueError(f"{shown(unknown.group(1), 40)} is not a parameter of {name}; it takes: {known or 'none'}")
        elif twice:
            reason = ValueError(f"{twice.group(1)} is given twice to {name}")
        elif missing:
            reason = ValueError(f"{missing.group(1)} is missing: {name} takes {known}")
        else:
            raise error
        return JSONResponse({"error": self.playground.refused(endpoint, reason), "title": CHECK_INPUT}, status_code=400)
