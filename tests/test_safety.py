"""Safety rules (issue 10): no shell interpolation, no unpickling of untrusted files, credentials
from the environment only, and file names never derived from prompts."""

import re
from pathlib import Path

SRC = [p for d in ("packforcing", "harness", "reports", "scripts") for p in Path(d).rglob("*.py")]


def test_no_shell_and_no_unsafe_loading():
    bad = []
    for p in SRC:
        text = p.read_text()
        for pat in (r"shell\s*=\s*True", r"os\.system\(", r"os\.popen\(", r"pickle\.loads?\(", r"(?<![.\w])eval\(", r"(?<![.\w])exec\("):
            if re.search(pat, text):
                bad.append(f"{p}: {pat}")
        for line in text.splitlines():
            if "torch.load(" in line and "weights_only=True" not in line:
                bad.append(f"{p}: torch.load without weights_only=True: {line.strip()}")
    assert not bad, bad


def test_no_credentials_in_configs():
    for p in list(Path("harness").rglob("*.py")) + list(Path("sweeps").rglob("*.py")):
        text = p.read_text()
        assert not re.search(r"(api_key|WANDB_API_KEY|password)\s*=\s*['\"][^'\"]+['\"]", text), p


def test_video_and_cell_files_are_named_by_hash_not_prompt(tmp_path):
    from harness import store

    name = store.video_relpath("0123456789abcdef")
    assert re.fullmatch(r"videos/[0-9a-f]{16}\.mp4", str(name)), name
