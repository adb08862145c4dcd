"""Text that can hold a token, a prompt, a file name or a model's words shows as written in every view.

Each view is fed the same text and a plain one: rendered (Markdown as CommonMark with HTML, as the page's
renderer reads it), the text must appear whole and the markup must be the same as for the plain text — no tag,
emphasis, link or LaTeX came from the text. One browser check at the end runs a column named after the text.
"""

from __future__ import annotations

import dataclasses

import pytest

from playground.engine import Settings, Variant, compare
from playground.evaluate.metrics import row_result
from playground.evaluate.prompt_files import Prompt
from playground.evaluate.report import Report
from tests.escaping_cases import PLAIN, TEXT, assert_shown_as_text, from_markdown

@pytest.fixture(scope="module")
def trace(tiny):
    return compare(tiny, "Hello", [Variant("a"), Variant("b", ["ban_eos"])], Settings(max_new_tokens=4))


def named(trace, text: str):
    """The trace with its columns named ``text`` and each step's token ``text`` (what a model could write)."""
    variants = []
    for variant in trace.variants:
        steps = [dataclasses.replace(s, token=text, top_k=[dataclasses.replace(t, token=text) for t in s.top_k])
                 for s in variant.steps]
        variants.append(dataclasses.replace(variant, name=text, steps=steps, stop_reason="stop_string",
                                            stop_detail=text))
    return dataclasses.replace(trace, variants=variants)


def test_the_compare_views_show_tokens_names_and_stop_strings_as_text(trace, tiny):
    from playground.story import story_markdown
    from playground.views import inspector_html, status_markdown, token_spans

    assert_shown_as_text(lambda text: token_spans(named(trace, text).variants[0]))
    assert_shown_as_text(lambda text: inspector_html(named(trace, text), 0, 1, tiny.info.stop_token_ids))
    assert_shown_as_text(lambda text: status_markdown(named(trace, text).variants[1]), from_markdown)
    assert_shown_as_text(lambda text: story_markdown(named(trace, text)), from_markdown)


def test_the_evaluate_table_shows_prompts_answers_and_columns_as_text(trace):
    from playground.ui.evaluate_tab import prompts_html

    def table(text: str) -> str:
        variant = dataclasses.replace(trace.variants[1], text=text)
        report = Report(model="m", model_reference="default", settings=Settings(max_new_tokens=4).to_dict(),
                        seeds=[0], prompts=[Prompt([{"role": "user", "content": text}], "line 1")],
                        columns=[Variant(text, ["ban_eos"])], rows=[row_result(variant, prompt=0, column=0, seed=0)],
                        problems=[])
        return prompts_html(report)

    assert_shown_as_text(table)
    assert table(TEXT).count(TEXT.replace("<", "&lt;").replace(">", "&gt;")) >= 3  # header, prompt, answer


def test_the_model_panel_recipe_banner_and_notices_show_text_as_written(tiny):
    from playground.finetune.lab import Lab
    from playground.finetune.recipes import RECIPES
    from playground.service import Playground
    from playground.ui import build_app
    from playground.ui.errors import refusal
    from playground.ui.finetune_tab import preview_html
    from playground.ui.model_panel import model_markdown

    def panel(text: str) -> str:
        bundle = dataclasses.replace(tiny, info=dataclasses.replace(tiny.info, name=text, source=text))
        return model_markdown(Playground(bundle, "tiny"))

    assert_shown_as_text(panel, from_markdown)
    assert_shown_as_text(lambda text: refusal(Playground(tiny, "tiny"), "/x", ValueError(text), page=True).message)

    description = preview_html(Lab(Playground(tiny, "tiny")), "eos_as_text")[0]
    assert "'</s>'" in RECIPES["eos_as_text"].description and "'</s>'" in from_markdown(description).text

    def banner(text: str) -> str:
        config = build_app(Playground(tiny, "tiny", banner=text)).get_config_file()
        return next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "banner")

    assert_shown_as_text(banner, from_markdown)
    assert "⚠" not in banner(PLAIN)
