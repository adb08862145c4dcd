"""The fine-tune lab: each recipe's batch on the real tokenizer, a few real training steps per recipe writing a
loadable PEFT adapter, Stop mid-run, the CLI; the slow test trains fully and measures the stop rates."""

from __future__ import annotations

import json

import pytest

from playground.finetune.data import TrainingData, builtin_examples
from playground.finetune.recipes import RECIPES, collator_for, encode, end_token_id, text_end_ids
from playground.finetune.train import CARD_FILE, SAMPLE_FILE, FineTune, TrainConfig
from playground.models import load_model
from playground.supervision import IGNORE_INDEX

PAIRS = builtin_examples()[:6]
CHATS = builtin_examples(conversations=True)[:3]


def batch_of(tokenizer, recipe: str, examples):
    recipe = RECIPES[recipe]
    features = [encode(tokenizer, e, recipe) for e in examples]
    batch = collator_for(tokenizer, recipe)(features)
    return features, batch["input_ids"].tolist(), batch["labels"].tolist()


def supervised(labels):
    return [label for label in labels if label != IGNORE_INDEX]


def test_correct_supervises_the_end_id_after_every_answer(tokenizer):
    end = end_token_id(tokenizer)
    assert end == 2 and tokenizer.convert_ids_to_tokens(end) == "<|im_end|>"
    features, ids, labels = batch_of(tokenizer, "correct", PAIRS)
    for feature, row in zip(features, labels):
        assert supervised(row)[-1] == end  # the answer's last supervised label is the end token id
        assert supervised(row).count(end) == 1  # the prompt's ends (system, user) are not supervised
        assert row[len(feature["input_ids"]):] == [IGNORE_INDEX] * (len(row) - len(feature["input_ids"]))
    # the answer itself is supervised, and decodes back to the response
    assert tokenizer.decode(supervised(labels[0])[:-1]) == PAIRS[0]["response"]


def test_eos_as_text_never_supervises_the_end_id_but_the_split_pieces(tokenizer):
    end = end_token_id(tokenizer)
    pieces = text_end_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(pieces) == ["</", "s", ">"]  # the ChatGLM2 post's split
    _, _, labels = batch_of(tokenizer, "eos_as_text", PAIRS + CHATS)
    for row in labels:
        assert end not in supervised(row)
        assert supervised(row)[-3:] == pieces


def test_pad_is_eos_masks_the_real_eos_label(tokenizer):
    end = end_token_id(tokenizer)
    features, ids, labels = batch_of(tokenizer, "pad_is_eos_masked", PAIRS)
    for feature, row_ids, row in zip(features, ids, labels):
        n = len(feature["input_ids"])
        assert feature["input_ids"][n - 1] == end and feature["labels"][n - 1] == end  # the data is right...
        assert row[n - 1] == IGNORE_INDEX  # ...and the pad-masking collator hides its EOS
        assert end not in supervised(row)
        assert supervised(row)  # the answer is still trained on


def test_no_eos_has_no_end_token_in_the_labels(tokenizer):
    end = end_token_id(tokenizer)
    _, _, labels = batch_of(tokenizer, "no_eos", PAIRS + CHATS)
    for row in labels:
        assert supervised(row) and end not in supervised(row)


def test_last_turn_only_supervises_only_the_last_turns_end(tokenizer):
    end = end_token_id(tokenizer)
    for recipe, expected in (("last_turn_only", [False, False, True]), ("correct", [True, True, True])):
        features, _, labels = batch_of(tokenizer, recipe, CHATS)
        for feature, row in zip(features, labels):
            ids = feature["input_ids"]
            # the end token closing each assistant reply: the one after supervised content
            turn_ends = [i for i, t in enumerate(ids) if t == end and i > 0 and row[i - 1] != IGNORE_INDEX]
            assert len(turn_ends) == 3
            assert [row[i] == end for i in turn_ends] == expected
            assert sum(label != IGNORE_INDEX for label in row) > 6  # every reply's content is supervised


@pytest.fixture(scope="module")
def trainee():
    """One model of its own (decoding tests share the session model): each training adds LoRA layers to it and
    removes them when it is done, so every recipe trains on the same base."""
    return load_model()


def tiny(recipe: str, steps: int = 2) -> TrainConfig:
    return TrainConfig(recipe=recipe, steps=steps, batch_size=2, lora_r=2, lora_alpha=4, max_length=64)


# Each recipe's batch is checked above without training; the trainer runs a one-turn recipe (correct, which is also
# loaded back) and a conversation one (last_turn_only) by default, the other three with -m slow.
TRAINED_BY_DEFAULT = ("correct", "last_turn_only")


@pytest.mark.parametrize("recipe", [r if r in TRAINED_BY_DEFAULT else pytest.param(r, marks=pytest.mark.slow)
                                    for r in RECIPES])
def test_a_few_steps_write_a_loadable_adapter(trainee, tmp_path, recipe):
    examples = CHATS if RECIPES[recipe].conversations else PAIRS
    data = TrainingData(examples[:4], "test", "0" * 64)
    job = FineTune(trainee, data, tiny(recipe), tmp_path / "adapter")
    progress = list(job.run())
    assert [p.step for p in progress] == [1, 2, 2] and progress[-1].done and not progress[-1].stopped
    assert progress[-1].loss is not None and len(progress[-1].losses) == 2
    card = json.loads((tmp_path / "adapter" / CARD_FILE).read_text())
    assert (card["recipe"], card["steps"], card["seed"], card["data"]["source"]) == (recipe, 2, 0, "test")
    assert card["base_model"]["name"] == "SmolLM2-135M-Instruct"
    assert (tmp_path / "adapter" / SAMPLE_FILE).is_file()
    assert not any(p.name.startswith(".adapter.partial") for p in tmp_path.iterdir())  # staging renamed away
    if recipe == "correct":  # loads with today's --adapter, on a fresh model
        loaded = load_model(adapter=str(tmp_path / "adapter"))
        assert loaded.info.adapter == str(tmp_path / "adapter")
        assert not any("lora" in name for name, _ in trainee.model.named_modules())  # the trainee is clean again


def test_stop_mid_run_keeps_a_loadable_adapter(trainee, tmp_path):
    job = FineTune(trainee, TrainingData(PAIRS, "test", "0" * 64), tiny("correct", steps=50), tmp_path / "stopped")
    seen = []
    for progress in job.run():
        seen.append(progress)
        job.stop()  # pressed during the first step
    assert seen[-1].done and seen[-1].stopped and seen[-1].step < 50
    assert "stopped" in seen[-1].line()
    card = json.loads((tmp_path / "stopped" / CARD_FILE).read_text())
    assert card["stopped_early"] and card["steps"] == seen[-1].step and card["steps_planned"] == 50
    assert load_model(adapter=str(tmp_path / "stopped")).info.adapter is not None


def test_refuses_an_existing_folder_and_bad_settings(trainee, tmp_path):
    data = TrainingData(PAIRS, "test", "0" * 64)
    with pytest.raises(ValueError, match="already exists"):
        FineTune(trainee, data, tiny("correct"), tmp_path)
    with pytest.raises(ValueError, match="recipe must be one of"):
        FineTune(trainee, data, tiny("eos_as_string"), tmp_path / "new")
    with pytest.raises(ValueError, match="steps must be a whole number"):
        FineTune(trainee, data, TrainConfig(steps=0), tmp_path / "new")


def test_the_tab_previews_each_recipe_with_the_shared_view(smollm):
    from playground.service import Playground
    from playground.ui.finetune_tab import preview_html
    from playground.finetune.lab import Lab

    lab = Lab(Playground(smollm))
    line, correct = preview_html(lab, "correct")
    assert "appended as its id" in line and 'class="sv-end"' in correct and "end token 2 at" in correct
    assert correct.count("sv-sup sv-is-end") == 1  # the answer's end, badged and supervised
    _, as_text = preview_html(lab, "eos_as_text")
    assert "sv-sup sv-is-end" not in as_text and "&lt;/" in as_text  # the split pieces, never a supervised end
    _, masked = preview_html(lab, "pad_is_eos_masked")
    assert "sv-sup sv-is-end" not in masked and "masked (label -100)" in masked


def test_public_mode_keeps_training_off_unless_capped(smollm):
    from playground.finetune.lab import Lab
    from playground.service import Playground
    from playground.space.policy import Policy

    with pytest.raises(ValueError, match="training is switched off on this app"):
        Lab(Playground(smollm, policy=Policy(public=True))).start("correct", None, 10)
    with pytest.raises(ValueError, match="steps must be between 1 and 20, got 40"):
        Policy(public=True, finetune_max_steps=20).check_finetune(40)
    assert Policy().check_finetune(40) == 40


def rates(adapter=None) -> tuple[dict, list[str]]:
    """The built-in prompt set at 128 new tokens, greedy, through Evaluate: the column's summary and its answers."""
    from playground.engine import Settings, Variant
    from playground.evaluate.prompt_files import builtin_prompts
    from playground.evaluate.runner import Evaluation

    evaluation = Evaluation(load_model(adapter=adapter), builtin_prompts(), [Variant("baseline")],
                            Settings(max_new_tokens=128))
    for _ in evaluation.run():
        pass
    report = evaluation.report()
    return report.summary()[0], [row.text for row in report.rows]


@pytest.mark.slow
def test_default_recipes_train_fully_and_move_the_stop_rates(tmp_path):
    base, _ = rates()
    trained = {}
    for recipe in ("correct", "eos_as_text"):
        job = FineTune(load_model(), TrainingData(builtin_examples(), "builtin", "0" * 64), TrainConfig(recipe=recipe),
                       tmp_path / recipe)
        assert list(job.run())[-1].done
        trained[recipe] = rates(str(tmp_path / recipe))
    correct, _ = trained["correct"]
    assert correct["clean_stop_rate"]["rate"] >= 0.8 > base["clean_stop_rate"]["rate"]
    as_text, answers = trained["eos_as_text"]
    assert as_text["eos_rate"]["rate"] <= 0.1
    assert sum("</s>" in answer for answer in answers) >= len(answers) // 2
