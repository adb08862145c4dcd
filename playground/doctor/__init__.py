"""EOS doctor: find out why a model doesn't stop, and write the files that fix what files can fix.

A model stops when ``generate()`` samples a token id listed in ``generation_config.eos_token_id``. That fails in
a handful of well-known ways, each checked with the real tokenizer, model and (optionally) a training sample:

ids (:mod:`.ids`)
    ``eos_ids_agree`` tokenizer, model config and generation config name different EOS ids;
    ``end_tokens_all_stop`` a family's several end tokens (<|eot_id|> + <|end_of_text|>, <|im_end|> +
    <|endoftext|>) with generation stopping on only one; ``gguf_end_tokens`` a GGUF export without the turn end.
tokenizer (:mod:`.tokenizer`)
    ``pad_is_eos`` pad == EOS masks every EOS label; ``eos_string_splits`` the EOS written as text splits;
    ``tokenizer_appends_eos`` add_eos_token promises an EOS that encoding does not add.
template (:mod:`.template`)
    ``chat_template_eos`` assistant turns end with a token generation does not stop on;
    ``chat_template_single_end`` the end token is written twice.
generation (:mod:`.generation`)
    ``generation_config_blocks_eos`` EOS banned or delayed; ``stop_strings_survive_decoding`` stop strings that
    skip_special_tokens=True deletes; ``p_eos_at_answer_end`` teacher-forced p(EOS) after complete answers.
weights (:mod:`.weights`)
    ``eos_embedding`` untrained EOS rows; ``chat_tokens_trained`` untrained chat-token rows;
    ``adapter_trains_new_tokens`` a LoRA adapter that leaves added tokens untrained.
data (:mod:`.data`)
    ``sample_ends_with_eos`` examples without EOS; ``truncation_keeps_eos`` max_length cuts the EOS off;
    ``every_turn_end_supervised`` multi-turn labels that supervise only the last turn's end.
training (:mod:`.training`)
    ``format_matches_inference`` examples in another prompt format than inference uses; ``bos_eos_doubled`` BOS
    or EOS twice; ``packing_separates_samples`` packed samples without a supervised end between them;
    ``labels_aligned`` labels shifted or one token off the answer. :func:`example_view` shows one example's
    supervised tokens as these checks read them.
exports and later stages (:mod:`.artifacts`, :mod:`.generation`)
    ``artifacts_agree`` adapter/merged folders, GGUF files and Modelfiles that end or stop differently;
    ``penalty_spares_eos`` a repetition penalty that pushes the end token down; ``stopping_kept`` p(EOS) that
    collapsed since an earlier checkpoint. ``end_tokens_all_stop`` also gives the stop list for each runtime.

Each :class:`Finding` says what fixes it (``action``): an argument at generation time, the files
(:func:`write_fixes` writes them), or the training. Example::

    from playground.models import load_model
    from playground.doctor import diagnose, report_markdown

    print(report_markdown(diagnose(load_model())))

or ``python -m playground doctor --model default --json``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from playground.decoder import RunStopped
from playground.models import LoadedModel

from .core import ACTIONS, STATUS_ICONS, STATUSES, Context, Finding, load_sample
from .data import check_every_turn_end_supervised, check_sample_ends_with_eos, check_truncation_keeps_eos
from .artifacts import check_artifacts_agree
from .generation import (
    check_generation_config_blocks_eos,
    check_p_eos_at_answer_end,
    check_penalty_spares_eos,
    check_stop_strings_survive_decoding,
    check_stopping_kept,
)
from .ids import check_end_tokens_all_stop, check_eos_ids_agree, check_gguf_end_tokens
from .ranking import weigh
from .repair import RepairResult, check_out_dir, write_fixes, zip_fixes
from .report import group_findings, report_json, report_markdown
from .template import check_chat_template_eos, check_chat_template_single_end
from .tokenizer import check_eos_string_splits, check_pad_is_eos, check_tokenizer_appends_eos
from .training import (
    check_bos_eos_doubled,
    check_format_matches_inference,
    check_labels_aligned,
    check_packing_separates_samples,
    example_view,
)
from .weights import check_adapter_trains_new_tokens, check_chat_tokens_trained, check_eos_embedding

__all__ = ["ACTIONS", "CHECKS", "STATUSES", "STATUS_ICONS", "Finding", "RepairResult", "check_out_dir", "diagnose",
           "example_view", "group_findings", "load_sample", "report_json", "report_markdown", "write_fixes", "zip_fixes"]

CHECKS = (
    check_eos_ids_agree,
    check_end_tokens_all_stop,
    check_gguf_end_tokens,
    check_pad_is_eos,
    check_eos_string_splits,
    check_tokenizer_appends_eos,
    check_chat_template_eos,
    check_chat_template_single_end,
    check_generation_config_blocks_eos,
    check_stop_strings_survive_decoding,
    check_eos_embedding,
    check_chat_tokens_trained,
    check_adapter_trains_new_tokens,
    check_sample_ends_with_eos,
    check_truncation_keeps_eos,
    check_every_turn_end_supervised,
    check_format_matches_inference,
    check_bos_eos_doubled,
    check_packing_separates_samples,
    check_labels_aligned,
    check_artifacts_agree,
    check_p_eos_at_answer_end,
    check_penalty_spares_eos,
    check_stopping_kept,
)


def diagnose(bundle: LoadedModel, *, sample: list[dict] | None = None, max_length: int = 512,
             probe: bool = True, gguf=None, stop_strings: list[str] | None = None, artifacts=(),
             compare_with: LoadedModel | None = None, repetition_penalty: float | None = None,
             on_check: Callable[[int, int, str], None] | None = None, model: str | None = None,
             cancel: threading.Event | None = None) -> list[Finding]:
    """Run every check on a loaded model; one Finding per check.

    ``model``: which of the bundle's models to examine, as a column names it — ``"base"``, a loaded adapter's or a
    second checkpoint's name (None: the model a column without ``@NAME`` runs, i.e. the only adapter or the base).

    ``sample``: training examples (see :func:`load_sample`); ``max_length``: the training max_length;
    ``probe=False`` skips the forward passes of the teacher-forced p(EOS) check; ``gguf``: a GGUF export of this
    model to compare (a model loaded from a GGUF is compared with its own file); ``stop_strings``: strings your
    code searches the decoded text for; ``artifacts``: paths of exports to compare (adapter or merged folders,
    .gguf files, Ollama Modelfiles); ``compare_with``: an earlier checkpoint with the same tokenizer (SFT before
    DPO); ``repetition_penalty``: the one you serve with (default: the generation config's).
    Each finding's ``weight`` says how much it explains the measured p(EOS) (:mod:`.ranking`); the report leads
    with the heaviest. ``on_check(index, count, words)`` is called before each check runs (the page shows which one: the
    teacher-forced probe takes seconds). Once ``cancel`` is set (the page that asked has gone), it stops before
    its next check or forward pass, raising :class:`~playground.decoder.RunStopped`.
    """
    if repetition_penalty is not None and (isinstance(repetition_penalty, bool) or not isinstance(
            repetition_penalty, (int, float)) or repetition_penalty <= 0):
        raise ValueError(f"repetition_penalty must be a number > 0, got {repetition_penalty!r}")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    if sample is not None and not isinstance(sample, list):
        raise ValueError(f"sample must be a list of dicts or None, got {type(sample).__name__}")
    if sample is not None and not sample:
        raise ValueError("sample must contain at least 1 example, got an empty list")
    if stop_strings is not None and not all(isinstance(s, str) and s for s in stop_strings):
        raise ValueError("stop_strings must be a list of non-empty strings")
    name = bundle.resolve_model(model)
    examined = bundle.bundle_for(name)  # a second checkpoint is a loaded model of its own
    ctx = Context(examined, sample, max_length, gguf=gguf, stop_strings=stop_strings, artifacts=artifacts,
                  compare_with=compare_with, repetition_penalty=repetition_penalty,
                  model=name if examined is bundle else None, cancel=cancel)
    findings = []
    for index, check in enumerate(CHECKS):
        ctx.stop_if_cancelled()
        if on_check is not None:
            on_check(index, len(CHECKS), check.__name__.removeprefix("check_").replace("_", " "))
        if check is check_p_eos_at_answer_end and not probe:
            findings.append(Finding("p_eos_at_answer_end", "Model puts probability on EOS where an answer ends",
                                    "not_applicable", "Skipped (probe=False / --no-probe).",
                                    "Measures p(EOS) right after complete answers.", "Run without --no-probe."))
            continue
        try:
            with ctx.using():
                findings.append(check(ctx))
        except RunStopped:
            raise
        except Exception as error:  # one odd tokenizer/model must not hide the other findings
            name = check.__name__.removeprefix("check_")
            findings.append(Finding(name, f"Could not check {name}", "warning",
                                    f"The check could not run: {type(error).__name__}: {error}",
                                    (check.__doc__ or "").strip(), "Report this with the model you used."))
    return weigh(findings)
