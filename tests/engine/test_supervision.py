"""The training-example view on the real tokenizer: a masked end token reads as masked, a supervised one as
supervised, and whitespace is visible."""

from playground.supervision import summary, to_html, to_text, tokens_of


def _chat(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello.\nBye."}], tokenize=True,
                                         return_dict=True)["input_ids"]


def test_masked_end_token_is_reported_masked(tokenizer):
    ids = list(_chat(tokenizer))
    end = ids.index(2, len(ids) - 3)  # the assistant turn's <|im_end|>
    labels = [t if i < end else -100 for i, t in enumerate(ids)]  # pad=eos masking: the end is cut out
    tokens = tokens_of(tokenizer, ids, labels, end_ids={2})
    assert f"2 at {end}: masked (label -100)" in summary(tokens)
    assert '<span class="sv-tok sv-masked sv-is-end"' in to_html(tokens)
    assert "↵" in to_text(tokens)  # the newline inside the answer is drawn


def test_supervised_end_token_is_badged(tokenizer):
    ids = list(_chat(tokenizer))
    tokens = tokens_of(tokenizer, ids, None, end_ids={2})
    assert summary(tokens).startswith(f"{len(ids)} of {len(ids)} tokens supervised")
    assert "masked" not in summary(tokens)
    assert to_html(tokens).count('class="sv-end">end</b>') == ids.count(2)
    assert "<|im_end|>[2]⏹" in to_text(tokens)
