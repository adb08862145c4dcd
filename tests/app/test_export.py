"""Copy this fix over the API: /export_code writes the page's snippet."""

from __future__ import annotations

import pytest

PARIS = "What can I do in Paris?"  # rambles with the chat template: no EOS within 300 tokens


def test_api_export_code_writes_the_pages_snippet(app_server):
    from gradio_client import Client

    client = Client(app_server, verbose=False)
    code = client.predict(prompt=PARIS, interventions=["eos_reward", "stop_strings"], kind="pipeline",
                          stop_strings="Louvre", strength=20, api_name="/export_code")
    compile(code, "fix.py", "exec")
    assert "generator = pipeline('text-generation', model=model, tokenizer=tokenizer)" in code
    assert "stop_strings=['Louvre']" in code and "strength=20.0" in code
    with pytest.raises(Exception, match="kind must be one of generate, pipeline, kwargs"):
        client.predict(prompt=PARIS, interventions=[], kind="chat", api_name="/export_code")
