"""The doctor's routes of the served app: the training-example view names the field of a bad line, the fix comes
as a zip, and every doctor route takes the model to examine."""

from __future__ import annotations

import json
import zipfile

import pytest


def test_the_example_endpoint_names_the_field_of_a_bad_line_number(app_server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps({"prompt": "Hi?", "response": "Hello."}) + "\n")
    client = Client(app_server, verbose=False)
    view = client.predict(handle_file(str(sample)), 1, api_name="/doctor_example")
    assert "Example 1: rendered with the chat template; the prompt masked" in view and 'class="sv-end">end</b>' in view
    with pytest.raises(AppError, match="example must be a number from 1 to 1"):
        client.predict(handle_file(str(sample)), 5, api_name="/doctor_example")
    with pytest.raises(AppError, match="upload a training sample first"):
        client.predict(None, 1, api_name="/doctor_example")


@pytest.mark.slow
def test_doctor_fix_endpoint_serves_the_zip(app_server):
    from gradio_client import Client

    archive, fixes, report = Client(app_server, verbose=False).predict(None, api_name="/doctor_fix")
    assert zipfile.ZipFile(archive).read("FIXES.md").decode().startswith("# EOS doctor fixes for SmolLM2")
    assert "tokenizer_config.json: pad_token '<|im_end|>' -> '\\<repo_name>'" in fixes
    assert "## Fix the files" in report and "e.g. '\\<repo_name>' (id 3)" in report


def test_the_doctor_routes_take_the_model_to_examine(app_server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_server, verbose=False)
    with pytest.raises(AppError, match="model 'nope' is not loaded"):
        client.predict(None, "@nope", api_name="/doctor")
    with pytest.raises(AppError, match="model 'nope' is not loaded"):
        client.predict(None, 1, "nope", api_name="/doctor_example")
    report = client.predict(None, api_name="/doctor")  # no model: the one a column without @NAME runs
    assert report.startswith("## EOS doctor — SmolLM2-135M-Instruct @base")
