"""make bench-peers' pieces that are not timings: llama.cpp's build options, the bytes a GGUF
step reads, the failures it reports, and the llama.cpp rows of results.json."""

import sys

import numpy as np
import pytest

from helpers.tools import peers
from helpers.tools.bench_report import summarize


def test_x86_build_names_each_instruction_set_from_the_cpu_flags_and_never_amx():
    options = peers.cmake_options("x86_64", {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"})
    assert "-DGGML_NATIVE=OFF" in options and not any("march" in o for o in options)
    assert {"-DGGML_AVX2=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_FMA=ON"} <= set(options)
    # flags the CPU lacks stay off: an AVX2 laptop gets no AVX-512 code
    assert {"-DGGML_AVX512_BF16=OFF", "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX_VNNI=OFF", "-DGGML_BMI2=OFF"} <= set(
        options
    )
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(options)
    laptop = peers.cmake_options("x86_64", {"sse4_2", "avx", "avx2", "fma", "f16c"})
    assert "-DGGML_AVX512=OFF" in laptop and "-DGGML_AVX512_VNNI=OFF" in laptop


def test_arm_build_uses_the_compilers_native_target():
    options = peers.cmake_options("aarch64", set())
    assert "-DGGML_NATIVE=ON" in options and not any("AVX" in o for o in options)


def write_gguf(path, tensors):
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tied", [True, False])
def test_gguf_bytes_per_token_reads_the_head_whole_and_one_embedding_row(tmp_path, tied):
    vocab, dim = 40, 8
    tensors = {
        "token_embd.weight": np.ones((vocab, dim), dtype=np.float32),
        "blk.0.attn_q.weight": np.ones((dim, dim), dtype=np.float32),
        "output_norm.weight": np.ones(dim, dtype=np.float32),
    }
    if not tied:
        tensors["output.weight"] = np.ones((vocab, dim), dtype=np.float32)
    write_gguf(tmp_path / "m.gguf", tensors)
    row, table, rest = dim * 4, vocab * dim * 4, (dim * dim + dim) * 4
    # tied: the table is the LM head (read whole) and one row of it is looked up; untied: the head
    # is read whole and the table one row
    assert peers.gguf_bytes_per_token(tmp_path / "m.gguf") == table + rest + row


def test_missing_compiler_names_the_packages_to_install(monkeypatch):
    monkeypatch.setattr(peers.shutil, "which", lambda tool: None if tool == "cmake" else f"/usr/bin/{tool}")
    monkeypatch.setattr(peers.os, "geteuid", lambda: 1000)  # not root: it does not install, it says how
    with pytest.raises(peers.PeerError, match=r"needs cmake.*apt-get install cmake g\+\+"):
        peers.build_tools()


def test_a_failing_command_reports_its_last_lines():
    failing = [sys.executable, "-c", "import sys; print('step one'); sys.exit('the real reason')"]
    with pytest.raises(peers.PeerError, match=r"(?s)the converter failed \(exit status 1\).*the real reason"):
        peers.run(failing, "the converter", 60)


def test_results_rows_compare_each_llama_cpp_type_with_the_books_run_round_by_round():
    seconds = {
        "scratch-cache": [16.0, 20.0],
        "scratch-cache int8": [10.0, 8.0],
        "scratch-cache int4": [8.0, 8.0],
        "transformers": [30.0, 30.0],
        "llama.cpp bf16": [12.0, 10.0],
        "llama.cpp q8_0": [5.0, 8.0],
        "llama.cpp q4_0": [4.0, 4.0],
    }
    group = {
        "model": "1b-shape",
        "dtype": "bfloat16",
        "prompt_tokens": 16,
        "new_tokens": 128,
        "seconds": seconds,
        "tokens_per_s": {impl: 128 / min(s) for impl, s in seconds.items()},
        "bandwidth_GBps": [20.0, 25.0],
        "bytes_per_token": dict.fromkeys(seconds, 1_000_000_000) | {"llama.cpp q8_0": 600_000_000},
    }
    rows = {(r["impl"], r["dtype"]): r for r in summarize([group], None)["rows"]}
    q8 = rows["llama.cpp", "q8_0"]
    assert q8["book"] == "int8" and q8["bytes_per_token"] == 600_000_000
    assert q8["book_over_peer_per_round"] == [0.5, 1.0]  # 5 s / 10 s, then 8 s / 8 s
    assert rows["llama.cpp", "bf16"]["book"] == "bfloat16"
    assert rows["llama.cpp", "bf16"]["book_over_peer_per_round"] == [0.75, 0.5]
    assert rows["llama.cpp", "q4_0"]["book_over_peer_per_round"] == [0.5, 0.5]
    assert "book" not in rows["scratch-cache", "int8"]
    results = summarize([group], None)
    assert results["roofline_tokens_per_s"]["1b-shape-q8_0-llama.cpp"] == round(25e9 / 600_000_000, 3)


def test_bench_peers_stops_at_once_with_the_builds_message(monkeypatch, capsys, tmp_path):
    """Before any timing: a build that cannot happen is one message and exit status 1."""
    from helpers.tools import bench

    def cannot_build():
        raise peers.PeerError("building llama.cpp needs cmake: install it")

    monkeypatch.setattr(peers, "ensure_llama_cpp", cannot_build)
    assert bench.main(["--peers", "--skip-nbval", "--out", str(tmp_path)]) == 1
    assert "make bench-peers: building llama.cpp needs cmake" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
