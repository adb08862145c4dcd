"""What the page draws: every stop reason comes from the server, none is copied into the page script."""

from __future__ import annotations

import json

from playground import charts


def test_the_page_gets_every_stop_reason_from_the_server_and_copies_none():
    from pathlib import Path

    from playground.trace import StopReason
    from playground.ui import HEAD, PAGE_CONFIG

    assert list(PAGE_CONFIG["stops"]) == [reason.value for reason in StopReason]
    assert PAGE_CONFIG["stops"]["max_new_tokens"] == {"label": "max new tokens", "symbol": "square"}
    assert f"window.eosPlaygroundConfig = {json.dumps(PAGE_CONFIG)};" in HEAD  # before page.js, in its script
    script = (Path(charts.__file__).parent / "ui" / "page.js").read_text(encoding="utf-8")
    assert not [reason for reason in StopReason if f"{reason.value}:" in script or f'"{reason.value}"' in script]
