"""Chapter 14: a real model."""

import struct

import torch

from helpers import check


def my_dequantize_q8_0(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    values = []
    for start in range(0, len(raw), 34):  # one block: a float16 scale, then 32 signed bytes
        (scale,) = struct.unpack("<e", raw[start : start + 2])
        codes = torch.frombuffer(bytearray(raw[start + 2 : start + 34]), dtype=torch.int8).float()
        values.append(torch.tensor(scale, dtype=torch.float32) * codes)
    return torch.cat(values).reshape(shape)


def my_dequantize_q4_1(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    values = []
    for start in range(0, len(raw), 20):  # scale, minimum, then 16 bytes of two codes each
        scale, minimum = struct.unpack("<ee", raw[start : start + 4])
        packed = torch.tensor(list(raw[start + 4 : start + 20]))
        codes = torch.cat([packed % 16, packed // 16]).float()  # values 0-15 low, 16-31 high
        values.append(torch.tensor(scale, dtype=torch.float32) * codes + torch.tensor(minimum, dtype=torch.float32))
    return torch.cat(values).reshape(shape)


def my_chatml(tok, messages: list[dict]) -> list[int]:
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    ids = []
    for m in messages:
        ids += [start] + tok.encode(m["role"] + "\n" + m["content"], bos=False) + [end] + tok.encode("\n", bos=False)
    return ids + [start] + tok.encode("assistant\n", bos=False)


EXERCISES = [
    (check.q8_0_blocks, my_dequantize_q8_0),
    (check.q4_1_blocks, my_dequantize_q4_1),
    (check.chatml, my_chatml),
]
