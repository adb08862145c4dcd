"""Broken setups the doctor's tests build on purpose, shared by the engine and browser tiers: a LoadedModel around
any model and tokenizer, findings by id, a template that doubles the end token, a small GGUF export, and a
training example labelled as a correct completion-only collator labels it."""

from __future__ import annotations

import numpy as np

from playground.doctor import Finding
from playground.models import LoadedModel, ModelInfo, eos_token_ids, stop_token_ids

QUESTION = [{"role": "user", "content": "What is the capital of Italy?"}]
CHAT = QUESTION + [{"role": "assistant", "content": "Rome."}]
IM_END = 2  # SmolLM2's <|im_end|>: EOS and turn end


def bundle_of(model, tokenizer, adapter: str | None = None) -> LoadedModel:
    base = model.get_base_model() if adapter else model
    info = ModelInfo(
        name="fixture", source="test", num_parameters=base.num_parameters(), dtype="float32", device="cpu",
        context_length=512, eos_token_ids=eos_token_ids(tokenizer, base),
        stop_token_ids=stop_token_ids(tokenizer, base), pad_token_id=tokenizer.pad_token_id,
        has_chat_template=bool(tokenizer.chat_template), load_seconds=0.0, adapter=adapter,
        vocab_size=base.get_output_embeddings().weight.shape[0],
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


def by_id(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.id: finding for finding in findings}


def doubled_end_template(tokenizer) -> str:
    """SmolLM2's own template with `+ eos_token` after the turn end: '<|im_end|><|im_end|>'."""
    template = tokenizer.chat_template.replace("'<|im_end|>' + '\n'", "'<|im_end|>' + eos_token + '\n'")
    assert template != tokenizer.chat_template
    return template


def write_gguf(path, tokenizer, *, eos: int, eot: int | None = None) -> None:
    """A small GGUF export: the tokenizer's vocabulary and template, one tiny tensor, the given end ids."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(eos)
    if eot is not None:
        writer.add_eot_token_id(eot)
    writer.add_chat_template(tokenizer.chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def labelled(tokenizer, messages) -> dict:
    """input_ids and labels as a correct completion-only collator builds them: the last reply and its end token."""
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    start = len(tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                              return_dict=True)["input_ids"])
    end = ids.index(IM_END, start)
    return {"input_ids": ids, "labels": [-100] * start + ids[start:end + 1] + [-100] * (len(ids) - end - 1),
            "start": start, "end": end}


def row(example: dict) -> dict:
    return {"input_ids": example["input_ids"], "labels": example["labels"]}
