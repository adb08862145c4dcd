"""playground.compat without a model: a transformers upgrade that removes or changes one of the private calls
fails with a sentence naming the call."""

from __future__ import annotations

import pytest
import torch
import transformers

from playground.compat import PrivateAPIChanged, config_logits_processors, keep_cache_rows


def test_a_broken_private_call_says_which_one():
    with pytest.raises(PrivateAPIChanged, match=r"private GenerationMixin\._prepare_special_tokens .*written against"):
        config_logits_processors(object(), transformers.GenerationConfig(), 3)
    with pytest.raises(PrivateAPIChanged, match=r"private Cache\.reorder_cache"):
        keep_cache_rows(object(), torch.tensor([0]))
