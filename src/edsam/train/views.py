"""SLIP's data side: the CLIP view plus two SimCLR-augmented views of each image, with SLIP's crops.

open_clip_train applies one transform per image; SLIP needs three tensors. The
transform below returns them stacked as (3, C, H, W), which the default
collate turns into (B, 3, C, H, W); ``VariantCLIP`` splits them again.
"""

from __future__ import annotations

import torch
from torchvision import transforms


def slip_clip_transform(size: int, mean, std) -> transforms.Compose:
    """SLIP's CLIP view (its main.py): RandomResizedCrop(scale 0.5-1), no other augmentation.

    open_clip's training transform crops at scale 0.9-1 (bicubic); SLIP's CLIP loss sees this one.
    """
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.5, 1.0)),
        transforms.Lambda(lambda image: image.convert("RGB")),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def simclr_transform(size: int, mean, std) -> transforms.Compose:
    """SimCLR's augmentation as SLIP uses it (crop 0.08-1, colour jitter, grey, blur, flip)."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.08, 1.0)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([transforms.GaussianBlur(kernel_size=max(3, size // 10 * 2 + 1), sigma=(0.1, 2.0))],
                               p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.Lambda(lambda image: image.convert("RGB")),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


class MultiView:
    """image -> stack(clip_view, simclr_view, simclr_view)."""

    def __init__(self, size: int, mean, std):
        self.clip_transform = slip_clip_transform(size, mean, std)
        self.simclr = simclr_transform(size, mean, std)

    def __call__(self, image) -> torch.Tensor:
        return torch.stack([self.clip_transform(image), self.simclr(image), self.simclr(image)])
