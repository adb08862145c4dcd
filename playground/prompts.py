"""Turn what the user typed into the exact token ids the model sees.

One function builds prompts for the engine, the CLI and the exported "copy this fix" snippet, so that
all three feed the model the same ids; one function checks a chat ``messages`` list, wherever one comes in.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")


def check_messages(messages, where: str, *, to_answer: bool) -> list[dict]:
    """The one rule for a chat ``messages`` list, wherever one comes in (Evaluate's prompt sets, fine-tune data,
    the doctor's sample): a non-empty list of ``{"role", "content"}`` objects, each role one of :data:`ROLES`
    (what every chat template renders) and each content a string, a system message first or not at all.

    ``to_answer``: a prompt the model answers, so the last message is the user's; otherwise a conversation to learn
    from, which needs an assistant turn. Returns copies holding only role and content; ValueError naming ``where``.

        >>> check_messages([{"role": "user", "content": "Hi"}], "line 1", to_answer=True)
        [{'role': 'user', 'content': 'Hi'}]
        >>> check_messages([{"role": "user", "content": "Hi"}], "line 1", to_answer=False)
        Traceback (most recent call last):
        ValueError: line 1: 'messages' has no assistant turn to learn from
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: message {index + 1} needs a 'role' ({', '.join(ROLES)}) and a 'content' string")
    if any(m["role"] == "system" for m in messages[1:]):
        raise ValueError(f"{where}: a system message may only come first")
    if to_answer and messages[-1]["role"] != "user":
        raise ValueError(f"{where}: the last message must be the user's (the model answers it), got {messages[-1]['role']!r}")
    if not to_answer and not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: 'messages' has no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


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
