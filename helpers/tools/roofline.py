"""The memory-bandwidth roofline of decoding: a streaming read's GB/s, the weight bytes a
decode step reads, and the fraction of the roofline a measured rate reaches."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device) -> None:
    """Wait for a GPU's queued work (a CPU has none), so that a timer measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure_bandwidth(gib: float = 1.0, repeats: int = 7, device: str = "cpu") -> float:
    """Streaming-read bandwidth in GB/s: the median time to sum a large float32 tensor."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    x.sum()  # fault the pages in
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        x.sum()
        sync(device)
        times.append(time.perf_counter() - start)
    return x.nbytes / statistics.median(times) / 1e9


def roofline_fraction(group: dict, impl: str) -> float:
    """Median over rounds of (tokens/s / (that round's bandwidth / bytes read per token))."""
    bytes_read = group["bytes_per_token"][impl]
    fractions = [
        (group["new_tokens"] / seconds) / (bandwidth * 1e9 / bytes_read)
        for seconds, bandwidth in zip(group["seconds"][impl], group["bandwidth_GBps"], strict=True)
    ]
    return round(statistics.median(fractions), 3)
