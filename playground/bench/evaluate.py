"""An evaluation (``engine.run_all``) against one plain ``generate()`` call per (prompt, column)."""

from __future__ import annotations

import time

import torch

def bench_evaluate(bundle, prompts: int = 16, new_tokens: int = 32) -> dict:
    """Wall time of an evaluation (``prompts`` built-in single-turn prompts × baseline and eos_reward, greedy)
    against one plain ``generate()`` call per (prompt, column) with the same processors, in the same run.

    The evaluation decodes through ``engine.run_all``; the ratio reaches its target (≤ 0.35) only when that
    batches rows across comparisons."""
    from playground.engine import Settings, Variant
    from playground.evaluate.prompt_files import PromptSet, builtin_prompts
    from playground.evaluate.runner import Evaluation
    from playground.interventions import build_interventions
    from playground.prompts import encode_prompt

    chosen = [p for p in builtin_prompts().prompts if not p.history and p.system is None][:prompts]
    columns = [Variant("baseline", []), Variant("eos_reward", [{"name": "eos_reward", "params": {"reward_start_ratio": 0.5}}])]
    tokenizer, stop_ids = bundle.tokenizer, bundle.info.stop_token_ids

    def sequential_generate() -> int:
        generated = 0
        for prompt in chosen:
            ids = torch.tensor([encode_prompt(tokenizer, prompt.text)])
            for column in columns:
                built = build_interventions(column.interventions, tokenizer=tokenizer, eos_token_ids=stop_ids,
                                            max_new_tokens=new_tokens, prompt_length=None)
                out = bundle.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                            do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
                                            logits_processor=built.logits_processors)
                generated += out.shape[1] - ids.shape[1]
        return generated

    def evaluate() -> int:
        evaluation = Evaluation(bundle, PromptSet(chosen), columns, Settings(max_new_tokens=new_tokens))
        for _ in evaluation.run():
            pass
        return sum(row.steps for row in evaluation.report().rows)

    warm = torch.tensor([encode_prompt(tokenizer, chosen[0].text)])
    bundle.model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=2, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)
    started = time.perf_counter()
    generate_tokens = sequential_generate()
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    evaluate_tokens = evaluate()
    evaluate_s = time.perf_counter() - started
    return {
        "prompts": len(chosen),
        "columns": len(columns),
        "new_tokens": new_tokens,
        "generated_tokens": evaluate_tokens,
        "same_tokens_as_generate": evaluate_tokens == generate_tokens,
        "sequential_generate_s": round(generate_s, 2),
        "evaluate_s": round(evaluate_s, 2),
        "evaluate_vs_sequential_generate": round(evaluate_s / generate_s, 3),  # target <= 0.35
    }
