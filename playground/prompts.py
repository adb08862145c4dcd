"""Turn what the user typed into the exact token ids the model sees.

One function builds prompts for the engine, the CLI and the exported "copy this fix" snippet, so that
all three feed the model the same ids.
"""

from __future__ import annotations


def render_prompt(tokenizer, prompt: str, *, use_chat_template: bool = True, system_prompt: str | None = None) -> str:
    """The prompt as text: wrapped in the chat template (with a generation prompt) when asked and available."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system_prompt}\n\n{prompt}" if system_prompt else prompt


def encode_prompt(tokenizer, prompt: str, *, use_chat_template: bool = True, system_prompt: str | None = None) -> list[int]:
    """Token ids of :func:`render_prompt`. A rendered chat template already holds its special tokens."""
    text = render_prompt(tokenizer, prompt, use_chat_template=use_chat_template, system_prompt=system_prompt)
    templated = use_chat_template and bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(text, add_special_tokens=not templated)["input_ids"]
