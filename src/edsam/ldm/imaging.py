"""The one conversion between PIL images and the LDM's tensors in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_model_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> a (3, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) tensors in [-1, 1] -> (..., H, W, 3) uint8 arrays."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    return pixels.movedim(-3, -1).numpy()
