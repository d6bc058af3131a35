"""Chapter 16: instruction tuning."""

import torch
import torch.nn.functional as F

from helpers import check
from helpers.chat import llama3_prompt
from helpers.tokenizer import Tokenizer


def my_labels(tok: Tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Before each reply, the chat format's own prompt of the messages so far (it ends with the
    assistant's header); the prompt's new tokens are -100, the reply and <|eot_id|> are trained."""
    ids, labels = [], []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = llama3_prompt(tok, messages[:i])
        labels += [-100] * (len(prompt) - len(ids))
        ids = prompt
        reply = tok.encode(m["content"], bos=False) + [tok.special_tokens["<|eot_id|>"]]
        ids, labels = ids + reply, labels + reply
    return ids, labels


def my_masked_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Row t predicts the label at t + 1; -100 positions count for nothing, the mean is over the rest."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


EXERCISES = [
    (check.sft_labels, my_labels),
    (check.sft_masked_loss, my_masked_loss),
]
