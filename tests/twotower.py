"""A two-tower torch model for attribute-model tests (importable by worker processes)."""

from __future__ import annotations

import numpy as np
import torch
from testmodels import letter_counts


class TextTower(torch.nn.Module):
    """Letter counts of a string -> 8-d."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(26, 8)

    def preprocess(self, text):
        return torch.as_tensor(letter_counts(text))

    def forward(self, batch):
        return self.layer(batch)


class TwoTower(torch.nn.Module):
    """``text`` and ``image`` towers into one 8-d space; ``forward`` is the image tower."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.text = TextTower()
        self.image = torch.nn.Linear(8, 8)

    def preprocess(self, x):
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)

    def forward(self, batch):
        return self.image(batch)

    def encode_text(self, texts):
        """A method: a batch (list) of strings -> list of vectors."""
        with torch.no_grad():
            return [self.text(self.text.preprocess(t)).numpy() for t in texts]
