"""`python -m playground doctor --fix OUT_DIR`: a broken model directory in, a directory the doctor passes out, the
original untouched (hashed before and after)."""

from __future__ import annotations

import copy
import hashlib
import zipfile

import pytest

from playground.cli import main as cli_main
from playground.doctor import diagnose, write_fixes, zip_fixes
from playground.models import load_model
from tests.doctor_cases import bundle_of, by_id, doubled_end_template, write_gguf
from tests.support import make_tiny_llama

# What files can fix in the broken fixture below, and must pass after --fix.
FIXED_BY_FILES = ("eos_ids_agree", "end_tokens_all_stop", "chat_template_eos", "chat_template_single_end",
                  "generation_config_blocks_eos", "pad_is_eos")


def hashes(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def broken_dir(tokenizer, tmp_path):
    """A saved tiny model with every file-fixable fault at once: generation stops on <|endoftext|> while the
    tokenizer and template end with <|im_end|>, suppress_tokens bans <|im_end|>, pad == EOS, and the template
    writes the end token twice."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = doubled_end_template(tok)
    model = make_tiny_llama(tok)
    model.config.eos_token_id = [0, 2]
    model.generation_config.eos_token_id = 0
    model.generation_config.suppress_tokens = [2]
    directory = tmp_path / "broken"
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def test_fix_writes_a_directory_the_doctor_passes(broken_dir, tmp_path, capsys):
    before = hashes(broken_dir)
    found = by_id(diagnose(load_model(str(broken_dir)), probe=False))
    assert {check: found[check].status for check in FIXED_BY_FILES} == {
        "eos_ids_agree": "problem", "end_tokens_all_stop": "problem", "chat_template_eos": "problem",
        "chat_template_single_end": "warning", "generation_config_blocks_eos": "problem", "pad_is_eos": "warning"}

    out = tmp_path / "fixed"
    assert cli_main(["doctor", "--model", str(broken_dir), "--no-probe", "--fix", str(out)]) == 1
    assert f"Wrote {out}" in capsys.readouterr().err
    assert hashes(broken_dir) == before  # nothing in the original directory changed

    weights = out / "model.safetensors"
    assert weights.is_symlink() and weights.resolve() == (broken_dir / "model.safetensors").resolve()
    fixed = by_id(diagnose(load_model(str(out)), probe=False))
    assert {check: fixed[check].status for check in FIXED_BY_FILES} == dict.fromkeys(FIXED_BY_FILES, "ok")
    repaired = load_model(str(out))
    assert repaired.model.generation_config.eos_token_id == [0, 2]
    assert repaired.model.generation_config.suppress_tokens is None
    assert repaired.tokenizer.pad_token == "<repo_name>" and repaired.model.config.pad_token_id == 3

    fixes = (out / "FIXES.md").read_text()
    assert "generation_config.json: eos_token_id [0] -> [0, 2]" in fixes
    assert "generation_config.json: suppress_tokens [2] -> None" in fixes
    # <repo_name> is escaped so that Markdown renderers do not take it for an HTML tag and drop it.
    assert "tokenizer_config.json: pad_token '<|im_end|>' -> '\\<repo_name>'" in fixes
    assert "chat_template.jinja: the template writes one end token after a turn" in fixes
    assert "(`end_tokens_all_stop`)" in fixes.split("They fix:")[1].split("\n")[0]
    # What files cannot fix is listed with its fix: here the EOS input row, zeroed as the random model's padding_idx.
    assert "## Not fixed by files" in fixes and "(`eos_embedding`, warning)" in fixes
    assert f"python -m playground doctor --model {out}`" in fixes


def test_fix_repairs_a_gguf_export_that_lost_the_turn_end(tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    make_tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    exports = tmp_path / "exports"
    exports.mkdir()
    write_gguf(exports / "model.gguf", tokenizer, eos=0)
    original = hashes(exports)

    out = tmp_path / "fixed"
    code = cli_main(["doctor", "--model", str(model_dir), "--gguf", str(exports / "model.gguf"), "--no-probe",
                     "--fix", str(out)])
    assert code == 1
    assert hashes(exports) == original
    repaired = by_id(diagnose(load_model(str(out)), probe=False, gguf=out / "model.gguf"))["gguf_end_tokens"]
    assert repaired.status == "ok"
    assert repaired.data["eos_token_id"] == 0 and repaired.data["eot_token_id"] == 2
    assert "model.gguf: copy of" in (out / "FIXES.md").read_text()


def test_fix_refuses_a_used_or_original_directory(broken_dir, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    assert cli_main(["doctor", "--model", str(broken_dir), "--no-probe", "--fix", str(used)]) == 2
    assert "is not an empty directory" in capsys.readouterr().err
    assert cli_main(["doctor", "--model", str(broken_dir), "--no-probe", "--fix", str(broken_dir / "fixed")]) == 2
    assert "inside the original model directory" in capsys.readouterr().err
    assert not (broken_dir / "fixed").exists()


def test_a_model_without_a_directory_gets_its_weights_written(tokenizer, tmp_path):
    tok = copy.deepcopy(tokenizer)
    model = make_tiny_llama(tok)
    model.generation_config.eos_token_id = 0
    bundle = bundle_of(model, tok)
    result = write_fixes(bundle, diagnose(bundle, probe=False), tmp_path / "fixed")
    assert "written from the loaded model" in result.weights
    assert (tmp_path / "fixed" / "model.safetensors").is_file()
    assert by_id(diagnose(load_model(str(tmp_path / "fixed")), probe=False))["eos_ids_agree"].status == "ok"


def test_zip_for_the_page_holds_only_the_small_files(tokenizer, tmp_path):
    tok = copy.deepcopy(tokenizer)
    model = make_tiny_llama(tok)
    model.generation_config.eos_token_id = 0
    bundle = bundle_of(model, tok)
    archive = zip_fixes(bundle, diagnose(bundle, probe=False), tmp_path)
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"FIXES.md", "generation_config.json", "config.json", "tokenizer_config.json", "tokenizer.json"} <= names
    assert not any(name.endswith(".safetensors") for name in names)
    assert "copy them over a copy of your model directory" in (archive.parent / "repaired" / "FIXES.md").read_text()
