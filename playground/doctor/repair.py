"""``doctor --fix OUT_DIR``: write the config and tokenizer files that fix what files can fix, and FIXES.md.

OUT_DIR is a model directory ``from_pretrained(OUT_DIR)`` loads: the repaired ``config.json``,
``generation_config.json`` and tokenizer files, the weights as symlinks to the original files (or, when the model
did not come from a directory, written from the loaded model), a repaired copy of a GGUF file whose metadata lost
the turn end, and ``FIXES.md``. The original directory is never written to.

Each finding whose ``action`` is ``"files"`` carries ``data["repair"]``, which says what to write:

* ``stop_on``: ids added to ``generation_config.eos_token_id``;
* ``eos_token`` / ``pad_token``: an existing token the tokenizer should use (the pad id also goes into the
  configs);
* ``generation_config``: generation-config fields and their repaired values;
* ``chat_template``: a template that was checked by rendering it;
* ``gguf``: ``{"path", "changes": {metadata key: id}}`` for a repaired GGUF copy;
* ``artifacts``: ``[{"path", "file", "text"}]`` corrected copies (a Modelfile, a generation_config.json) written
  to ``OUT_DIR/artifacts/<file>``.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from playground.models import LoadedModel

from .core import ACTIONS, Finding
from .gguf_meta import write_gguf_with_metadata
from .report import GROUP_TITLES, escape_tags

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
# Files OUT_DIR gets from the repaired objects; copying the originals too could leave two disagreeing versions.
_REWRITTEN = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
              "vocab.json", "merges.txt", "tokenizer.model", "FIXES.md",
              "playground-cache.json"}  # the embedded model's cache marker describes the cache, not OUT_DIR


@dataclass
class RepairResult:
    """What ``write_fixes`` did: the directory, one line per change, the findings it fixed, the ones it could not."""

    out_dir: Path
    changes: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    not_fixed: list[str] = field(default_factory=list)
    weights: str = ""


def _source_directory(bundle: LoadedModel) -> Path | None:
    """The local directory the model's weights were loaded from (a hub id resolves to its cached snapshot)."""
    base = bundle.model.get_base_model() if bundle.info.adapter else bundle.model
    name = base.config.name_or_path or ""
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # not a hub id, or not in the local cache
            return None
    return path if any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()) else None


def _source_is_quantized(source: Path | None) -> bool:
    """Whether the original config.json says its weights are quantized (GPTQ, AWQ, a saved bitsandbytes model)."""
    import json

    try:
        return "quantization_config" in json.loads((source / "config.json").read_text())
    except (TypeError, OSError, ValueError):
        return False


def check_out_dir(out_dir, originals=()) -> None:
    """Refuse (``ValueError``) an OUT_DIR that exists with files in it or lies inside one of ``originals``."""
    out_dir = Path(out_dir)
    resolved = out_dir.resolve()
    for original in originals:
        original = Path(original).resolve()
        if resolved == original or original in resolved.parents:
            raise ValueError(f"OUT_DIR {out_dir} is inside the original model directory {original}; choose a new "
                             "directory (the original files stay as they are)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"OUT_DIR {out_dir} already exists and is not an empty directory")


def write_fixes(bundle: LoadedModel, findings: list[Finding], out_dir, *, weights: str = "link",
                reveal_paths: bool = True) -> RepairResult:
    """Write the repaired model files for ``findings`` (from :func:`diagnose` on ``bundle``) into ``out_dir``.

    ``weights="link"`` makes OUT_DIR loadable on its own (weights symlinked, or saved when the model has no
    source directory, GGUF copies written); ``weights="none"`` writes only the small files (for a download).
    ``reveal_paths`` False (a download for a visitor of a shared app): FIXES.md names where the model came from
    without a path on the host. Raises ``ValueError`` when ``out_dir`` is not empty or lies inside the original
    directory.
    """
    if weights not in ("link", "none"):
        raise ValueError(f"weights must be 'link' or 'none', got {weights!r}")
    out_dir = Path(out_dir)
    base = bundle.model.get_base_model() if bundle.info.adapter else bundle.model
    repairs = [(f, f.data["repair"]) for f in findings
               if f.status in ("warning", "problem") and f.action == "files" and f.data.get("repair")]
    gguf_repairs = [r["gguf"] for _, r in repairs if "gguf" in r]
    source = _source_directory(bundle)
    check_out_dir(out_dir, [p for p in [source] if p] + [Path(g["path"]).parent for g in gguf_repairs])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = RepairResult(out_dir)

    tokenizer = copy.deepcopy(bundle.tokenizer)
    config = copy.deepcopy(base.config)
    if not reveal_paths:  # config.json records where the model was loaded from (the server's cache, for default)
        config.name_or_path = ""
    generation_config = copy.deepcopy(getattr(base, "generation_config", None))
    if generation_config is None:
        from transformers import GenerationConfig

        generation_config = GenerationConfig()
    if hasattr(config, "quantization_config") and not _source_is_quantized(source):
        del config.quantization_config  # added by a GGUF or bitsandbytes load; the weights on disk are not

    for finding, repair in repairs:
        stop = list(generation_config.eos_token_id if isinstance(generation_config.eos_token_id, list)
                    else [generation_config.eos_token_id] if generation_config.eos_token_id is not None else [])
        added = [i for i in repair.get("stop_on", []) if i not in stop]
        if added:
            generation_config.eos_token_id = stop + added
            result.changes.append(f"generation_config.json: eos_token_id {stop or None} -> {stop + added} "
                                  f"({finding.id})")
        if "eos_token" in repair and tokenizer.eos_token != repair["eos_token"]:
            result.changes.append(f"tokenizer_config.json: eos_token {tokenizer.eos_token!r} -> "
                                  f"{repair['eos_token']!r} "
                                  f"({finding.id})")
            tokenizer.eos_token = repair["eos_token"]
        if "pad_token" in repair and tokenizer.pad_token != repair["pad_token"]:
            old = tokenizer.pad_token
            tokenizer.pad_token = repair["pad_token"]
            config.pad_token_id = generation_config.pad_token_id = tokenizer.pad_token_id
            result.changes.append(f"tokenizer_config.json: pad_token {old!r} -> {repair['pad_token']!r}; "
                                  "config.json and "
                                  f"generation_config.json: pad_token_id -> {tokenizer.pad_token_id} ({finding.id})")
        for key, value in repair.get("generation_config", {}).items():
            old = getattr(generation_config, key, None)
            setattr(generation_config, key, value)
            result.changes.append(f"generation_config.json: {key} {old!r} -> {value!r} ({finding.id})")
        if "chat_template" in repair:
            tokenizer.chat_template = repair["chat_template"]
            result.changes.append(f"chat_template.jinja: the template writes one end token after a turn ({finding.id})")
        if "gguf" in repair and weights == "link":
            original = Path(repair["gguf"]["path"])
            target = out_dir / original.name
            write_gguf_with_metadata(original, target, repair["gguf"]["changes"])
            result.changes.append(f"{target.name}: copy of {original} with " + ", ".join(
                f"{key} = {value}" for key, value in repair["gguf"]["changes"].items()) + f" ({finding.id})")
        elif "gguf" in repair:
            result.not_fixed.append(finding.id)
            continue
        for artifact in repair.get("artifacts", []):  # corrected copies of a Modelfile or generation_config.json
            target = out_dir / "artifacts" / artifact["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(artifact["text"], encoding="utf-8")
            result.changes.append(f"artifacts/{artifact['file']}: corrected copy of {artifact['path']} ({finding.id})")
        result.fixed.append(finding.id)

    if weights == "link":
        result.weights = _place_weights(bundle, base, source, out_dir)
    config.save_pretrained(out_dir)
    generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    fixed = set(result.fixed)
    result.not_fixed += [f.id for f in findings if f.status in ("warning", "problem") and f.id not in fixed
                         and f.id not in result.not_fixed]
    (out_dir / "FIXES.md").write_text(_fixes_markdown(bundle, findings, result, reveal_paths), encoding="utf-8")
    return result


def _place_weights(bundle: LoadedModel, base, source: Path | None, out_dir: Path) -> str:
    """Symlink the source directory's weight files (copying its other small files), or save the loaded weights."""
    if source is not None:
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.name in _REWRITTEN or path.suffix == ".gguf":
                continue
            if path.suffix in WEIGHT_SUFFIXES:
                (out_dir / path.name).symlink_to(path.resolve())
            else:
                shutil.copy2(path, out_dir / path.name)
        return f"symlinks to the weight files in {source}"
    base.save_pretrained(out_dir)
    return "written from the loaded model (it did not come from a model directory)"


def _shown_source(bundle: LoadedModel) -> str:
    """Where the model came from, as a visitor may read it: the hub id, never a path on the host."""
    from ..models import DEFAULT_HUB_ID

    origin = bundle.info.origin or bundle.info.name
    return f"{origin}; on the hub: {DEFAULT_HUB_ID}" if origin.startswith("embedded") else origin


def _fixes_markdown(bundle: LoadedModel, findings: list[Finding], result: RepairResult, reveal_paths: bool = True) -> str:
    by_id = {f.id: f for f in findings}
    out = result.out_dir
    source = bundle.info.source if reveal_paths else _shown_source(bundle)
    lines = [f"# EOS doctor fixes for {bundle.info.name}", "",
             f"Written by `python -m playground doctor --fix`. The original files ({source}) were not "
             "changed.", ""]
    if result.weights:
        load = f"--adapter {bundle.info.adapter} " if bundle.info.adapter else ""
        lines += [f"Weights: {result.weights}. Load it like any model directory: "
                  f"`AutoModelForCausalLM.from_pretrained({str(out)!r})`, and check it: "
                  "`" + " ".join([f"python -m playground doctor --model {out}", load.strip()] + [
                      f"--gguf {out / Path(r['gguf']['path']).name}" for f in findings if f.id in result.fixed
                      for r in [f.data.get("repair", {})] if "gguf" in r]).strip() + "`."
                  + (" The adapter was not copied: pass it again." if bundle.info.adapter else ""), ""]
    else:
        lines += ["Only the small files: copy them over a copy of your model directory (weights unchanged).", ""]
    lines += ["## Changed", ""]
    if result.changes:
        lines += [f"- {change}" for change in result.changes]
        lines += ["", "They fix: " + ", ".join(f"{by_id[i].title} (`{i}`)" for i in result.fixed) + "."]
    else:
        lines.append("Nothing: no finding can be fixed by files.")
    lines.append("")
    if result.not_fixed:
        lines += ["## Not fixed by files", ""]
        for key in (*ACTIONS, "unknown"):
            group = [by_id[i] for i in result.not_fixed
                     if i in by_id and (by_id[i].action if by_id[i].action in ACTIONS else "unknown") == key]
            if group:
                lines += [f"### {GROUP_TITLES[key]}", ""]
                for finding in group:
                    lines += [f"#### {finding.title} (`{finding.id}`, {finding.status})", "", finding.fix, ""]
    return escape_tags("\n".join(lines).rstrip() + "\n")


def zip_fixes(bundle: LoadedModel, findings: list[Finding], root, *, max_age_seconds: float = 3600,
              reveal_paths: bool = True) -> Path:
    """The small repaired files (``write_fixes(weights="none")``) as a zip under ``root``, for a download; zips
    older than ``max_age_seconds`` are removed so a long-running app does not fill its disk. ``reveal_paths``
    False: no path on the host in FIXES.md (a visitor's download)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age_seconds
    for old in root.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="fixes-", dir=root))
    write_fixes(bundle, findings, directory / "repaired", weights="none", reveal_paths=reveal_paths)
    return Path(shutil.make_archive(str(directory / "eos-doctor-fixes"), "zip", directory / "repaired"))
