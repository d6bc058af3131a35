"""The environment files agree, and the repository holds no machine paths or secrets."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            out[name.lower().replace("_", "-")] = version
    return out


def test_requirements_are_exact_pins_with_torch_2_13():
    req = pins((ROOT / "requirements.txt").read_text())
    assert req["torch"] == "2.13.0"
    for name in (
        "tiktoken",
        "jupyterlab",
        "matplotlib",
        "nbval",
        "huggingface-hub",
        "llama-models",
        "transformers",
        "pytest",
        "hypothesis",
        "tqdm",
    ):
        assert name in req, name


def test_environment_yml_installs_the_same_packages():
    env = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+-\s+(.+)$", env.split("- pip:", 1)[1], re.M)
    listed = {}
    for item in pip_lines:
        if item.strip() == "-r requirements.txt":
            listed |= pins((ROOT / "requirements.txt").read_text())
        else:
            listed |= pins(item)
    assert listed == pins((ROOT / "requirements.txt").read_text())
    assert re.search(r"^\s+-\s+python=3\.11\s*$", env, re.M)


def test_tracked_files_hold_no_machine_paths_or_tokens():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    bad = re.compile(r"(/root/|/home/\w|/Users/\w|hf_[A-Za-z0-9]{30,})")
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".pth", ".png", ".model"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        if bad.search(text) and name not in {"tests/test_environment.py", "tests/test_notebooks.py"}:
            hits.append(name)
    assert not hits, f"machine paths or tokens in {hits}"
