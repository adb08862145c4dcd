"""Every door refuses like /compare: each API route, named or not, answers a bad value (NaN, Infinity, -1, "x", a
dict where a file goes, a path outside the uploads, an unknown or missing parameter, a name not loaded) with a
sentence naming the field — no bare "Error", no framework message, no traceback in the server's log — and the
server goes on serving. Driven over Gradio's REST routes (they can send NaN and what gradio_client refuses to)."""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client

NAN, INF = math.nan, math.inf
PASSWD = {"path": "/etc/passwd"}
PASSWD_FILE = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}, "orig_name": "passwd"}
FRAMEWORK = re.compile(r"less than minimum|greater than maximum|not in the list of choices|Internal Server Error|"
                       r"Could not preprocess|cannot be accessed|Cannot move|not a valid key-word|Traceback|File \"|"
                       r"object has no attribute|unexpected keyword|positional argument|^Error$")
# /compare's positional values: prompt, columns, max_new_tokens, temperature, top_p, top_k, seed, reward_start_ratio,
# strength, stop_strings, min_new_tokens, use_chat_template, system_prompt, repetition_penalty, no_repeat_ngram_size,
# min_p, typical_p, branches.
COMPARE = ["Hi", [[]], 2, 0, 1, 0, 0, 0.5, 12, "", 32, True, "", 1, 0, 0, 1, None]


def compare(**changes) -> list:
    names = ["prompt", "columns", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "reward_start_ratio",
             "strength", "stop_strings", "min_new_tokens", "use_chat_template", "system_prompt", "repetition_penalty",
             "no_repeat_ngram_size", "min_p", "typical_p", "branches"]
    return [changes.get(name, value) for name, value in zip(names, COMPARE)]


# (route, positional values, the field the sentence must name)
BAD = [
    ("compare", compare(max_new_tokens=NAN), "max_new_tokens"),
    ("compare", compare(max_new_tokens=INF), "max_new_tokens"),
    ("compare", compare(max_new_tokens=-1), "max_new_tokens"),
    ("compare", compare(max_new_tokens="x"), "max_new_tokens"),
    ("compare", compare(temperature=2.5), "temperature"),
    ("compare", compare(branches=[[1, 0, NAN]]), "branch"),
    ("compare", compare(branches=[[1, 0, INF]]), "branch"),
    ("compare", compare(prompt=PASSWD), "prompt"),
    ("compare", compare(columns=PASSWD_FILE), "columns"),
    ("compare", compare() + [1], "compare takes 18 values"),
    ("compare", [], "prompt is missing"),
    ("trace", ["x", NAN], "stages"),
    ("trace", [PASSWD, False], "trace_id"),
    ("trace", ["x", False, 3], "trace takes 2 values"),
    ("info", [1], "info takes 0 values"),
    ("evaluate", {"prompts": PASSWD}, "prompts"),
    ("evaluate", {"prompts": PASSWD_FILE}, "prompts"),
    ("evaluate", {"prompts": ["Hi"], "seeds": NAN}, "seeds"),
    ("evaluate", {"prompts": ["Hi"], "seeds": -1}, "seeds"),
    ("evaluate", {"prompts": ["Hi"], "max_new_tokens": INF}, "max_new_tokens"),
    ("evaluate", [["Hi"]], "columns is missing"),
    ("export_code", {"kind": 5}, "kind"),
    ("export_code", {"interventions": PASSWD}, "column"),
    ("export_code", {"max_new_tokens": NAN}, "max_new_tokens"),
    ("load_model", [NAN, "", False], "model"),
    ("load_model", [PASSWD, "", False], "model"),
    ("load_model", ["default", "", "maybe"], "trust_remote_code"),
    ("load_model", ["default", 5, False], "adapter"),
    ("load_model", [], "model is missing"),
    ("add_adapter", [5], "spec"),
    ("add_adapter", [NAN], "spec"),
    ("add_adapter", [PASSWD], "spec"),
    ("add_adapter", ["nope=/no/such/adapter"], "adapter"),
    ("add_checkpoint", [PASSWD_FILE], "spec"),
    ("add_checkpoint", ["nope=/no/such/model"], "checkpoint"),
    ("remove_adapter", ["nope"], "adapter 'nope' is not loaded"),
    ("remove_adapter", [5], "name"),
    ("remove_adapter", [None], "adapter"),
    ("remove_checkpoint", ["nope"], "checkpoint 'nope' is not loaded"),
    ("remove_checkpoint", [PASSWD], "name"),
    ("doctor", [PASSWD], "sample_file"),
    ("doctor", [PASSWD_FILE], "sample_file"),
    ("doctor", [5], "sample_file"),
    ("doctor", ["/etc/passwd"], "sample_file"),
    ("doctor", [[1, 2]], "sample_file"),
    ("doctor_fix", [PASSWD_FILE], "sample_file"),
    ("doctor_fix", [NAN], "sample_file"),
    ("doctor_example", [None, NAN], "number"),
    ("doctor_example", [None, INF], "number"),
    ("doctor_example", [None, -1], "number"),
    ("doctor_example", [None, "x"], "number"),
    ("doctor_example", [PASSWD_FILE, 1], "sample_file"),
    ("doctor_example", [None, 1, None], "training sample"),
    ("doctor_example", [None, 1, "@nope"], "nope"),
    ("doctor", [None, 5], "model"),
    ("doctor_fix", [None, "@nope"], "nope"),
    ("finetune", ["correct", None, NAN], "n_steps"),
    ("finetune", ["correct", None, "x"], "n_steps"),
    ("finetune", ["correct", None, -1], "n_steps"),
    ("finetune", ["nope", None, 1], "recipe_name"),
    ("finetune", [5, None, 1], "recipe_name"),
    ("finetune", ["correct", PASSWD, 1], "data_file"),
    ("finetune", ["correct", 5, 1], "data_file"),
    ("finetune_stop", [1], "finetune_stop takes 0 values"),
    ("export_html", ["nope"], "trace_id"),
    ("export_html", [PASSWD], "trace_id"),
    ("export_html", [5], "trace_id"),
    ("export_html", [], "trace_id is missing"),
]
# (route, keyword values for the keyword route /call/v2/NAME, the field)
BAD_KEYWORDS = [
    ("compare", {"prompt": "Hi", "foo": 1}, "foo"),
    ("info", {"foo": 1}, "foo"),
    ("trace", {}, "trace_id"),
    ("finetune_stop", {"x": 1}, "x"),
    ("doctor", {"sample_file": None, "extra": 2}, "extra"),
    ("no_such_route", {"a": 1}, "no_such_route"),
]
PUBLIC_ONLY = [  # a 1001-prompt evaluation: the policy refuses it before any work (locally, it would run)
    ("evaluate", {"prompts": ["Hi"] * 1001, "max_new_tokens": 1}, "prompts"),
]


def answer(url: str, route: str, body) -> dict | None:
    """POST a REST call and read its answer: the error event's payload ({"error", "title", ...}), or None when the
    call succeeded."""
    request = urllib.request.Request(f"{url}gradio_api/call/{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            event = json.load(response)
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return json.loads(text)
        except ValueError:
            return {"error": text}
    with urllib.request.urlopen(f"{url}gradio_api/call/{route}/{event['event_id']}", timeout=300) as response:
        stream = response.read().decode()
    if "event: error" not in stream:
        return None
    return json.loads(stream.split("event: error\ndata: ", 1)[1].splitlines()[0])


def post(url: str, route: str, body) -> tuple[str | None, str]:
    """The error message of a REST call (None when it succeeded), and the whole answer."""
    payload = answer(url, route, body)
    return (payload or {}).get("error"), json.dumps(payload)


def battery(url, cases) -> None:
    log = Path(url.log)
    before = len(log.read_text())
    client = Client(url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    routes = {name.lstrip("/") for name in [*api["named_endpoints"], *api["unnamed_endpoints"]]}
    tried = {route for route, _, _ in cases}
    assert routes <= tried, f"routes without a bad input here: {sorted(routes - tried)}"
    poor = []
    for route, values, field in cases:
        message, raw = post(url, f"v2/{route}" if isinstance(values, dict) else route,
                            values if isinstance(values, dict) else {"data": values})
        if message is None or FRAMEWORK.search(message) or field.lower() not in message.lower():
            poor.append(f"/{route} {json.dumps(values)[:70]}: {message!r} ({raw[:120]!r})")
    assert not poor, f"{len(poor)} of {len(cases)} bad inputs got no sentence naming the field:\n" + "\n".join(poor)
    added = log.read_text()[before:]
    assert "Traceback" not in added, added[-3000:]
    assert added.count(" refused: ") == len(cases), added[-3000:]
    # Nothing is left running, and the server still decodes.
    info = client.predict(api_name="/info")
    assert info["active_generations"] == 0 and info["rows_in_flight"] == 0
    job = client.submit("Hi", [[]], 2, api_name="/compare")
    assert list(job)[-1]["done"] is True


def test_every_door_refuses_with_a_sentence_locally(app_server):
    battery(app_server, BAD + BAD_KEYWORDS)


def test_every_door_refuses_with_a_sentence_in_public_mode(public_app_server):
    battery(public_app_server, BAD + BAD_KEYWORDS + PUBLIC_ONLY)


@pytest.mark.parametrize("route", ["on_preview", "on_preview_1"])
def test_the_fine_tune_preview_is_the_pages_own(app_server, route):
    """The Fine-tune tab's preview is wired to the page only (programs see it neither in the API nor at /call)."""
    api = Client(app_server, verbose=False).view_api(print_info=False, return_format="dict")
    assert "/" + route not in {**api["named_endpoints"], **api["unnamed_endpoints"]}


def test_an_adapter_added_over_the_api_is_removed_over_the_api_and_notices_are_titled_by_what_they_say(
        app_server, adapter_dirs):
    """The page's list of adapters is the one drawn at start; /remove_adapter still takes any loaded name."""
    from playground.ui.errors import BUSY, not_added

    client = Client(app_server, verbose=False)
    client.predict(f"lora2={adapter_dirs['louvre']}", api_name="/add_adapter")
    assert "lora2" in client.predict(api_name="/info")["models"]
    client.predict("lora2", api_name="/remove_adapter")
    assert "lora2" not in client.predict(api_name="/info")["models"]
    refused = answer(app_server, "remove_adapter", {"data": ["lora2"]})
    assert refused["error"].startswith("adapter 'lora2' is not loaded here") and refused["title"] == "Check your input"
    # A bad path to Add adapter is not "Model not loaded": nothing was loading a model.
    refused = answer(app_server, "add_adapter", {"data": ["x=/no/such/adapter"]})
    assert refused["title"] == not_added("adapter") == "Adapter not added — the loaded models are unchanged"
    assert "/no/such/adapter" in refused["error"]
    assert BUSY.startswith("Busy")
