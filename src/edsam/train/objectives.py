"""What the paper's baselines add to a CLIP training step (spec section 5).

open_clip_train's step is ``model_out = model(images, texts); loss(**model_out)``.
The variants here keep that step untouched: :class:`VariantCLIP` wraps the
open_clip model and returns extra features in ``model_out``, and
:class:`VariantLoss` turns them into extra loss terms. ``edsam.train.entry``
installs both into open_clip_train.

* ADA (Volpi et al. 2018, Algorithm 1), adapted to CLIP [choice]: ``steps``
  gradient-ascent steps of size ``lr`` on each image, along the gradient of
  that image's own loss (:func:`per_sample_losses`) minus ``gamma`` times the
  squared distance of its features to the clean ones; the adversarial copy is
  trained on with the same captions. Online per batch, not in rounds.
* AdvStyle (Zhong et al. 2022): one ascent step of size ``lr`` on each image's
  per-channel mean and std (its style, the learnable parameter of their
  Eq. for mu+ and sigma+) along the gradient of that image's own loss, or its
  sign (``step: sign``); train on clean and restyled images.

Both papers step each sample along the gradient of its own loss. The gradient
of a batch-mean loss is that divided by the batch size, which made the old
perturbations 1/B as strong (vanishing at 256 per GPU); here the per-sample
losses are summed, so strength does not depend on the batch (tested: a
doubled batch perturbs each image exactly as before). Each variant keeps the
mean L2 norm of its perturbations, which ``edsam.train.entry`` records per
epoch in ``train.json``.
* SLIP (Mu et al. 2022), as its code does: SimCLR loss (temperature 0.1)
  between two augmented views, their embeddings gathered across ranks as
  negatives (:func:`gather_with_grad`); a 3-layer MLP head on the image
  encoder's pooled features before CLIP's projection
  (:func:`pre_projection_features`); added to the CLIP loss with weight 1.

Inner gradient ascent uses ``torch.autograd.grad`` with respect to the images
only, so no gradient leaks into the model's ``.grad`` before the real step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip import ClipLoss
from torch import nn


@dataclass(frozen=True)
class AdaSettings:
    steps: int = 15
    lr: float = 1.0
    gamma: float = 1.0


@dataclass(frozen=True)
class AdvStyleSettings:
    lr: float = 1.0
    step: str = "gradient"  # gradient | sign

    def __post_init__(self):
        if self.step not in ("gradient", "sign"):
            raise ValueError(f"advstyle step {self.step!r} is not 'gradient' or 'sign'")


@dataclass(frozen=True)
class SlipSettings:
    weight: float = 1.0
    temperature: float = 0.1
    hidden_dim: int = 4096
    embed_dim: int = 256


def contrastive_loss(image_features, text_features, logit_scale) -> torch.Tensor:
    """The batch's symmetric InfoNCE on this process's samples (open_clip's ClipLoss, local)."""
    return ClipLoss()(F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1), logit_scale)


def per_sample_losses(image_features, text_features, logit_scale) -> torch.Tensor:
    """Each image's own CLIP loss: cross-entropy of picking its caption among the batch's (row i of the
    image-to-text half of CLIP's loss).

    With the captions held fixed it depends on image i alone, so the gradient
    of the sum over the batch is, for each image, the gradient of its own loss:
    the per-sample ascent ADA and AdvStyle prescribe (a classifier's loss of
    one sample, here the image classified among the captions). The text-to-image
    half mixes every image into every text's softmax and is left out.
    """
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t()
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")


def ada_images(clip, images, text_features, logit_scale, settings: AdaSettings) -> torch.Tensor:
    """Images moved up their own loss, held near their clean features (ADA's inner maximisation)."""
    text_features, logit_scale = text_features.detach(), logit_scale.detach()
    with torch.no_grad():
        clean = F.normalize(clip.encode_image(images), dim=-1)
    adversarial = images.detach().clone()
    for _ in range(settings.steps):
        adversarial.requires_grad_(True)
        features = F.normalize(clip.encode_image(adversarial), dim=-1)
        objective = per_sample_losses(features, text_features, logit_scale)
        objective = objective - settings.gamma * (features - clean).pow(2).sum(dim=-1)
        (grad,) = torch.autograd.grad(objective.sum(), adversarial)
        adversarial = (adversarial + settings.lr * grad).detach()
    return adversarial


def advstyle_images(clip, images, text_features, logit_scale, settings: AdvStyleSettings) -> torch.Tensor:
    """Images re-styled by one ascent step on their per-channel mean and std against their own loss (AdvStyle)."""
    mean = images.mean(dim=(2, 3), keepdim=True).detach()
    std = images.std(dim=(2, 3), keepdim=True).detach() + 1e-5
    content = ((images - mean) / std).detach()
    style_mean, style_std = mean.clone().requires_grad_(True), std.clone().requires_grad_(True)
    features = clip.encode_image(content * style_std + style_mean)
    objective = per_sample_losses(features, text_features.detach(), logit_scale.detach()).sum()
    grad_mean, grad_std = torch.autograd.grad(objective, (style_mean, style_std))
    if settings.step == "sign":
        grad_mean, grad_std = grad_mean.sign(), grad_std.sign()
    return (content * (std + settings.lr * grad_std) + mean + settings.lr * grad_mean).detach()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherLayer(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for each part and returns this rank's own.

    SLIP's ``utils.GatherLayer``: the loss on each rank uses every rank's
    embeddings as negatives, so a rank's embeddings get gradient from all the
    ranks' losses. (``torch.distributed.nn.all_gather`` does the same with
    reduce-scatter or all-to-all, which gloo lacks; this needs only all_reduce.)
    """

    @staticmethod
    def forward(ctx, tensor):
        gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads):
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated in rank order (this process's alone when not distributed)."""
    return torch.cat(_GatherLayer.apply(tensor)) if _distributed() else tensor


def simclr_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """SLIP's SIMCLRLoss: NT-Xent of this rank's views against both views of every rank's batch.

    For view a of sample i the positive is view b of i; the negatives are both
    views of every other sample of the global batch (its own view a masked).
    """
    q_a, q_b = F.normalize(first, dim=-1), F.normalize(second, dim=-1)
    k_a, k_b = gather_with_grad(q_a), gather_with_grad(q_b)
    rank = dist.get_rank() if _distributed() else 0
    labels = len(q_a) * rank + torch.arange(len(q_a), device=q_a.device)
    self_mask = F.one_hot(labels, len(k_a)).to(q_a.dtype) * 1e9
    logits_aa, logits_bb = q_a @ k_a.t() / temperature - self_mask, q_b @ k_b.t() / temperature - self_mask
    logits_ab, logits_ba = q_a @ k_b.t() / temperature, q_b @ k_a.t() / temperature
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return (loss_a + loss_b) / 2


def slip_head(in_dim: int, settings: SlipSettings, sync_batchnorm: bool = False) -> nn.Module:
    """SLIP's 3-layer MLP projection head (SyncBatchNorm across GPUs, as SLIP; per process on CPU, where
    torch cannot sync batch statistics)."""
    norm = nn.SyncBatchNorm if sync_batchnorm else nn.BatchNorm1d
    return nn.Sequential(
        nn.Linear(in_dim, settings.hidden_dim), norm(settings.hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(settings.hidden_dim, settings.hidden_dim), norm(settings.hidden_dim),
        nn.ReLU(inplace=True), nn.Linear(settings.hidden_dim, settings.embed_dim),
    )


def pre_projection_features(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The image tower's pooled features before CLIP's projection (SLIP's SimCLR head input).

    ViT: open_clip's own stages (patch embedding and dropout, transformer,
    pooling with its final LayerNorm), without ``@ proj``, i.e. SLIP's
    ``num_classes=0`` timm ViT. ModifiedResNet: the last stage's feature map
    averaged, the representation CLIP's attention-pooling head (itself the
    projection to the embedding) reads. Other towers are refused.
    """
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        pooled, _ = visual._pool(visual.transformer(visual._embeds(images)))
        return pooled
    if isinstance(visual, ModifiedResNet):
        x = visual.stem(images)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        return x.mean(dim=(2, 3))
    raise ValueError(f"SLIP needs an open_clip ViT or ModifiedResNet image tower, not {type(visual).__name__}")


def pre_projection_dim(visual: nn.Module) -> int:
    """Width of :func:`pre_projection_features`."""
    from open_clip.modified_resnet import ModifiedResNet

    if isinstance(visual, ModifiedResNet):
        return visual.attnpool.c_proj.in_features
    return visual.proj.shape[0] if getattr(visual, "proj", None) is not None else visual.output_dim


class VariantCLIP(nn.Module):
    """An open_clip model plus what a variant computes at training time.

    Images arrive as (B, C, H, W), or as (B, 3, C, H, W) for SLIP: the CLIP view
    then two SimCLR views (see ``edsam.train.views``). Attribute lookups the
    trainer makes (``logit_scale``, ``lock_image_tower`` ...) fall through to
    the wrapped model; :func:`clip_state_dict` strips the wrapper for export.
    """

    def __init__(self, clip: nn.Module, perturbation: str | None = None, ada: AdaSettings = AdaSettings(),
                 advstyle: AdvStyleSettings = AdvStyleSettings(), slip: SlipSettings | None = None,
                 sync_batchnorm: bool = False):
        super().__init__()
        if perturbation not in (None, "ada", "advstyle"):
            raise ValueError(f"unknown perturbation {perturbation!r}")
        self.clip = clip
        self.perturbation = perturbation
        self.ada, self.advstyle, self.slip = ada, advstyle, slip
        self.reset_perturbation_stats()
        self.ssl_head = None
        if slip is not None:
            self.ssl_head = slip_head(pre_projection_dim(clip.visual), slip, sync_batchnorm)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "clip":
                raise
            return getattr(self.clip, name)

    def reset_perturbation_stats(self):
        self._perturbation = {"l2_sum": 0.0, "rms_sum": 0.0, "samples": 0}

    def _record_perturbation(self, delta: torch.Tensor):
        if delta.is_meta:  # shapes only (benchmarks/cost_model.py counts FLOPs so): no values to record
            return
        flat = delta.detach().float().flatten(1)
        self._perturbation["l2_sum"] += float(flat.norm(dim=1).sum())
        self._perturbation["rms_sum"] += float(flat.pow(2).mean(dim=1).sqrt().sum())
        self._perturbation["samples"] += len(flat)

    def take_perturbation_stats(self) -> dict | None:
        """Mean L2 norm (and per-element RMS) of the perturbations since the last call; None without any."""
        stats, n = self._perturbation, self._perturbation["samples"]
        self.reset_perturbation_stats()
        if not n:
            return None
        return {"mean_l2": stats["l2_sum"] / n, "mean_rms": stats["rms_sum"] / n, "samples": n}

    def forward(self, images, texts=None):
        views = None
        if images.ndim == 5:
            images, views = images[:, 0], images[:, 1:]
        out = self.clip(images, texts)
        if not self.training or texts is None:
            return out
        if self.perturbation is not None:
            make = ada_images if self.perturbation == "ada" else advstyle_images
            settings = self.ada if self.perturbation == "ada" else self.advstyle
            hard = make(self.clip, images, out["text_features"], out["logit_scale"], settings)
            self._record_perturbation(hard - images.detach())
            out["perturbed_image_features"] = self.clip.encode_image(hard, normalize=True)
        if self.ssl_head is not None:
            if views is None:
                raise ValueError("SLIP needs two augmented views per image; the data transform did not make them")
            out["ssl_first"] = self.ssl_head(pre_projection_features(self.clip.visual, views[:, 0]))
            out["ssl_second"] = self.ssl_head(pre_projection_features(self.clip.visual, views[:, 1]))
        return out


class VariantLoss(nn.Module):
    """open_clip's loss plus the variant's terms; returns a dict the trainer sums.

    Keeps a running sum of the total per epoch so the entry point can record it.
    """

    def __init__(self, base: nn.Module, slip: SlipSettings | None = None):
        super().__init__()
        self.base = base
        self.slip = slip
        self.reset()

    def reset(self):
        self.total, self.steps, self.last = 0.0, 0, float("nan")

    def forward(self, image_features, text_features, logit_scale, perturbed_image_features=None,
                ssl_first=None, ssl_second=None, output_dict=False, **extra):
        losses = self.base(image_features=image_features, text_features=text_features,
                           logit_scale=logit_scale, output_dict=True, **extra)
        if perturbed_image_features is not None:
            losses["perturbed_contrastive_loss"] = self.base(
                perturbed_image_features, text_features, logit_scale, output_dict=True)["contrastive_loss"]
        if ssl_first is not None:
            losses["ssl_loss"] = self.slip.weight * simclr_loss(ssl_first, ssl_second, self.slip.temperature)
        total = float(sum(v.detach() for v in losses.values()))
        self.total, self.steps, self.last = self.total + total, self.steps + 1, total
        return losses if output_dict else sum(losses.values())


def clip_state_dict(model: nn.Module) -> dict:
    """The plain open_clip weights of a (possibly wrapped, possibly DDP) model's state dict."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("clip.") for k in state):
        state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
    return state
