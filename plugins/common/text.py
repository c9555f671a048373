"""Real English text that ships with every Python install, byte-level tokenized (vocab 256).

Source: the Python documentation topics in the standard library (pydoc_data.topics), about
465 KB. No downloads.
Split: first 90% train, last 10% validation, by bytes.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def corpus() -> torch.Tensor:
    """All text as uint8 byte ids, shape (n_bytes,)."""
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def split(name: str) -> torch.Tensor:
    data = corpus()
    cut = int(0.9 * len(data))
    return data[:cut] if name == "train" else data[cut:]


def get_batch(name: str, batch: int, seq: int, gen: torch.Generator, device: torch.device | str = "cpu"):
    """Random windows: x (batch, seq) and y = x shifted by one, int64, from a seeded generator."""
    data = split(name)
    ix = torch.randint(len(data) - seq - 1, (batch,), generator=gen)
    x = torch.stack([data[i : i + seq] for i in ix.tolist()]).long()
    y = torch.stack([data[i + 1 : i + 1 + seq] for i in ix.tolist()]).long()
    return x.to(device), y.to(device)
