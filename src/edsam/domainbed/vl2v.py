"""VL2V-ADiP: distil a CLIP teacher into a student for domain generalisation (spec section 8).

For one held-out target domain:

1. **Align**: the student backbone is frozen; a linear projection from its
   features to the CLIP embedding is trained with
   ``0.5 * (1 - cos(p, text(y))) + 0.5 * (1 - cos(p, clip_image(x)))``.
2. **Distill**: the projection is frozen and the backbone trained with the
   same loss.
3. **Predict**: ``argmax_c cos(p, text(c))`` with the teacher's class-prompt
   embeddings.

``variant="adip"`` takes a timm backbone (ImageNet weights from a local file
at paper scale, randomly initialised in the embedded default);
``variant="sd"`` (VL2V-SD) takes the teacher's own image encoder, its
projection starting at the identity (its features already are CLIP
embeddings). Teacher image embeddings (``teacher_targets``): ``augmented``
(default, as the authors run it) queries the frozen teacher on the very
augmented view the student sees, each step (:class:`SameView`: one random
crop, flip and colour change, then each network's own resize and
normalisation); ``clean`` reads the embeddings precomputed once per clean
image (:mod:`edsam.domainbed.features`; the black-box setting's one query per
image), while the student sees augmented views of it. Training samples
``batch_per_domain`` images from each training domain per step (DomainBed's
infinite loaders); model selection is DomainBed's training-domain validation:
the mean of the training domains' out-split accuracies, over the evaluations
of both stages. Nothing of this exists in a library (the authors' code is a
DomainBed fork), so the loop is ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edsam.domainbed.datasets import DomainBedDataset, DomainBedError, Split
from edsam.domainbed.features import ImageList
from edsam.fileio import atomic_path, sha256_file, write_json_atomic

VARIANTS = ("adip", "sd")
TEACHER_TARGETS = ("augmented", "clean")


@dataclass(frozen=True)
class VL2VSettings:
    variant: str = "adip"
    student: str = "resnet50"  # a timm architecture (adip)
    student_weights: str | None = None  # local .safetensors / .pth state dict; None = random init
    image_size: int = 224
    align_steps: int = 5001
    distill_steps: int = 5001
    lr: float = 5e-5
    batch_per_domain: int = 32
    eval_every: int = 500
    eval_batch_size: int = 256
    workers: int = 4
    seed: int = 0
    max_pixels: int = 16_777_216
    augment: bool = True
    teacher_targets: str = "augmented"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown VL2V variant {self.variant!r}: one of {VARIANTS}")
        if self.teacher_targets not in TEACHER_TARGETS:
            raise ValueError(f"unknown VL2V teacher_targets {self.teacher_targets!r}: one of {TEACHER_TARGETS}")


class Student(torch.nn.Module):
    """Backbone -> linear projection into the teacher's embedding space (unit vectors)."""

    def __init__(self, backbone: torch.nn.Module, feature_dim: int, embed_dim: int, identity: bool = False):
        super().__init__()
        self.backbone, self.projection = backbone, torch.nn.Linear(feature_dim, embed_dim)
        if identity:
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(embed_dim, feature_dim))
                self.projection.bias.zero_()

    def forward(self, images):
        return F.normalize(self.projection(self.backbone(images)), dim=-1)


def load_state_dict_file(path: str) -> dict:
    """A state dict from safetensors, or from a torch file without running its pickle (``weights_only``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state


def timm_backbone(settings: VL2VSettings) -> tuple[torch.nn.Module, int, dict]:
    """The timm student without its classifier, its feature width and normalisation."""
    import timm

    backbone = timm.create_model(settings.student, pretrained=False, num_classes=0)
    if settings.student_weights:
        path = str(settings.student_weights)
        if not Path(path).is_file():
            raise DomainBedError(f"{path}: student weights not found (vl2v.student_weights)")
        missing, unexpected = backbone.load_state_dict(load_state_dict_file(path), strict=False)
        if missing:
            raise DomainBedError(f"{path}: not a {settings.student} checkpoint: {len(missing)} weights missing "
                                 f"(first: {missing[:3]})")
    config = timm.data.resolve_data_config({}, model=backbone)
    return backbone, backbone.num_features, {"mean": config["mean"], "std": config["std"]}


def make_student(settings: VL2VSettings, teacher_dir: str, embed_dim: int) -> tuple[Student, dict, int]:
    """The student, its input normalisation and size (VL2V-SD: the teacher's own, whatever image_size says)."""
    if settings.variant == "sd":
        from edsam.domainbed.features import load_teacher

        visual = load_teacher(teacher_dir, "cpu")[0].visual
        cfg = visual.preprocess_cfg
        size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
        return Student(visual, embed_dim, embed_dim, identity=True), {"mean": cfg["mean"], "std": cfg["std"]}, size
    backbone, width, norm = timm_backbone(settings)
    return Student(backbone, width, embed_dim), norm, settings.image_size


def augmentation(image_size: int, train: bool):
    """DomainBed's image transforms (its ``datasets.py``) up to the tensor, at the student's input size."""
    from torchvision import transforms as T

    if not train:
        return T.Resize((image_size, image_size))
    return T.Compose([T.RandomResizedCrop(image_size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                      T.ColorJitter(0.3, 0.3, 0.3, 0.3), T.RandomGrayscale()])


def to_tensor(norm: dict):
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(norm["mean"], norm["std"])])


def transforms(image_size: int, norm: dict, train: bool):
    """DomainBed's transforms for the student: augmentation (when ``train``), tensor, normalisation."""
    from torchvision import transforms as T

    return T.Compose([augmentation(image_size, train), to_tensor(norm)])


class SameView:
    """One augmented view of an image as the student's input and as the teacher's (teacher_targets: augmented).

    The random crop, flip and colour change are drawn once; the view is then
    normalised for the student and passed through the teacher's own
    preprocessing (open_clip's resize, centre crop and normalisation), so the
    teacher embeds the image the student sees.
    """

    def __init__(self, augment, student_tail, teacher_preprocess):
        self.augment, self.student_tail, self.teacher_preprocess = augment, student_tail, teacher_preprocess

    def __call__(self, image):
        view = self.augment(image)
        return self.student_tail(view), self.teacher_preprocess(view)


def _readable(tensors, dataset: DomainBedDataset, domain_index: int, positions: np.ndarray) -> np.ndarray:
    """The split's positions whose image the teacher could read (the others were listed by the features job)."""
    return positions[np.isin(positions, tensors[f"position/{dataset.domains[domain_index].name}"].numpy())]


def _teacher_rows(tensors, dataset, domain_index, positions) -> torch.Tensor:
    name = dataset.domains[domain_index].name
    return tensors[f"image/{name}"][np.searchsorted(tensors[f"position/{name}"].numpy(), positions)]


def _image_list(dataset, domain_index, positions, transform, settings) -> ImageList:
    domain = dataset.domains[domain_index]
    return ImageList(dataset.root, domain.paths, domain.labels, positions, transform, settings.max_pixels)


class _Batches:
    """One batch of ``batch_per_domain`` images (sampled with replacement) from each training domain per step,
    with the teacher's embedding of each: precomputed (``teacher`` None) or of the same augmented view."""

    def __init__(self, tensors, dataset, split: Split, transform, settings: VL2VSettings, steps: int, seed: int,
                 teacher=None):
        self.loaders, self.targets, self.teacher = [], [], teacher
        workers = -(-settings.workers // len(split.train))  # the job's loader workers, shared by its domains
        for domain_index, positions in split.train:
            positions = _readable(tensors, dataset, domain_index, positions)
            images = _image_list(dataset, domain_index, positions, transform, settings)
            generator = torch.Generator().manual_seed(seed + domain_index)
            sampler = torch.utils.data.RandomSampler(images, replacement=True,
                                                     num_samples=steps * settings.batch_per_domain, generator=generator)
            self.loaders.append(torch.utils.data.DataLoader(
                _WithIndex(images), batch_size=settings.batch_per_domain, sampler=sampler,
                num_workers=workers, drop_last=True))
            self.targets.append(_teacher_rows(tensors, dataset, domain_index, positions))

    def __iter__(self):
        for parts in zip(*self.loaders):
            labels = torch.cat([p[1] for p in parts])
            if self.teacher is None:
                images = torch.cat([p[0] for p in parts])
                teacher = torch.cat([targets[p[2]] for targets, p in zip(self.targets, parts)])
            else:  # each item is (student view, teacher view) of one augmentation
                images = torch.cat([p[0][0] for p in parts])
                teacher = self.teacher(torch.cat([p[0][1] for p in parts]))
            yield images, labels, teacher


class _WithIndex(torch.utils.data.Dataset):
    """An ImageList item as (image, label, index in the list): the index finds the teacher's embedding."""

    def __init__(self, images: ImageList):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image, label, _, _ = self.images[index]
        return image, label, index


def vl2v_loss(student_embedding, text, labels, teacher_embedding) -> torch.Tensor:
    """0.5 * (1 - cos(p, text(y))) + 0.5 * (1 - cos(p, teacher image embedding)); p is unit-norm."""
    to_text = 1 - (student_embedding * text[labels]).sum(-1)
    to_image = 1 - (student_embedding * F.normalize(teacher_embedding, dim=-1)).sum(-1)
    return (0.5 * to_text + 0.5 * to_image).mean()


def frozen_teacher(teacher_dir: str, device: str):
    """The teacher's image encoder, frozen, as a function: teacher-preprocessed images -> unit embeddings."""
    from edsam.domainbed.features import load_teacher

    model, preprocess, _ = load_teacher(teacher_dir, device)
    model.requires_grad_(False)

    def embed(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(model.encode_image(images.to(device)).float(), dim=-1)

    return embed, preprocess


def validation_accuracy(student: Student, loaders: dict, text, device) -> dict:
    """DomainBed's training-domain validation: each training domain's out-split accuracy and their mean
    (the selection criterion; a pooled accuracy would weigh the largest domain most)."""
    per_domain = {name: accuracy(student, loader, text, device) for name, loader in loaders.items()}
    return {"val_acc": float(np.mean(list(per_domain.values()))), "val_acc_per_domain": per_domain}


def accuracy(student: Student, loader, text, device) -> float:
    student.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels, _, _ in loader:
            predicted = (student(images.to(device)) @ text.T).argmax(1).cpu()
            correct, total = correct + int((predicted == labels).sum()), total + len(labels)
    return correct / max(total, 1)


def _eval_loader(tensors, dataset, parts, transform, settings):
    lists = [_image_list(dataset, d, _readable(tensors, dataset, d, p), transform, settings) for d, p in parts]
    return torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(lists), batch_size=settings.eval_batch_size,
                                       num_workers=settings.workers)


def _set_stage(student: Student, stage: str) -> list[torch.nn.Parameter]:
    """Align trains the projection over a frozen backbone (eval mode); Distill the backbone under a frozen projection."""
    trained = student.projection if stage == "align" else student.backbone
    for module in (student.backbone, student.projection):
        module.requires_grad_(module is trained)
    student.train()
    if stage == "align":
        student.backbone.eval()
    return list(trained.parameters())


def train_stage(student, stage, batches, text, settings, device, evaluate) -> list[dict]:
    """One stage; ``evaluate(stage, step, mean_loss)`` every ``eval_every`` steps and at its end."""
    optimizer = torch.optim.Adam(_set_stage(student, stage), lr=settings.lr)
    history, window = [], []
    for step, (images, labels, teacher) in enumerate(batches, start=1):
        loss = vl2v_loss(student(images.to(device)), text, labels.to(device), teacher.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.item())
        if step % settings.eval_every == 0 or step == len(batches.loaders[0]):
            history.append(evaluate(stage, step, float(np.mean(window))))
            window = []
            _set_stage(student, stage)
    return history


def run_vl2v(dataset: DomainBedDataset, split: Split, tensors: dict, facts: dict, settings: VL2VSettings,
             out_json: str | Path, out_weights: str | Path, device: str | None = None) -> dict:
    """Align, Distill and Predict for one held-out domain; writes the result JSON and the selected student."""
    from safetensors.torch import save_file

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(settings.seed)
    started, text = time.time(), tensors["text"].to(device)
    student, norm, image_size = make_student(settings, facts["teacher"], text.shape[1])
    student.to(device)
    teacher = None
    train_transform = transforms(image_size, norm, train=settings.augment)
    if settings.teacher_targets == "augmented":
        teacher, teacher_preprocess = frozen_teacher(facts["teacher"], device)
        train_transform = SameView(augmentation(image_size, settings.augment), to_tensor(norm), teacher_preprocess)
    eval_transform = transforms(image_size, norm, train=False)
    val_loaders = {dataset.domains[d].name: _eval_loader(tensors, dataset, [(d, p)], eval_transform, settings)
                   for d, p in split.val}
    test_loader = _eval_loader(tensors, dataset, (split.test,), eval_transform, settings)
    best: dict = {"val_acc": -1.0}

    def evaluate(stage, step, loss):
        """Training-domain validation only: the target is scored once, for the selected checkpoint (and the last)."""
        record = {"stage": stage, "step": step, "loss": loss,
                  **validation_accuracy(student, val_loaders, text, device)}
        if record["val_acc"] > best["val_acc"]:  # the earliest checkpoint wins a tie
            best.update(record, state={k: v.detach().cpu().clone() for k, v in student.state_dict().items()})
        return record

    history = []
    for stage, steps, offset in (("align", settings.align_steps, 0), ("distill", settings.distill_steps, 1000)):
        batches = _Batches(tensors, dataset, split, train_transform, settings, steps, settings.seed + offset, teacher)
        history += train_stage(student, stage, batches, text, settings, device, evaluate)
    final = {**history[-1], "test_acc": accuracy(student, test_loader, text, device)}
    state = best.pop("state")
    student.load_state_dict(state)
    best["test_acc"] = accuracy(student, test_loader, text, device)
    with atomic_path(out_weights) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    result = {
        "target": split.target, "variant": settings.variant,
        "training_domains": [dataset.domains[i].name for i in split.training_domains],
        "selected": best, "final": final, "history": history, "test_acc": best["test_acc"],
        "selection": "mean of the training domains' out-split accuracies (DomainBed training-domain validation)",
        "teacher_targets": settings.teacher_targets,
        "settings": {**settings.__dict__}, "image_size": image_size, "student": _student_facts(settings, student),
        "teacher": facts["teacher"], "teacher_sha256": facts["teacher_sha256"],
        "listing_sha256": facts["listing_sha256"], "weights": str(out_weights), "device": device,
        "seconds": round(time.time() - started, 2),
        "versions": {p: version(p) for p in ("torch", "timm", "open_clip_torch")},
    }
    write_json_atomic(out_json, result)
    return result


def _student_facts(settings: VL2VSettings, student: Student) -> dict:
    weights = settings.student_weights
    return {"architecture": "teacher image encoder" if settings.variant == "sd" else settings.student,
            "weights": weights, "weights_sha256": sha256_file(weights) if weights else None,
            "parameters": sum(p.numel() for p in student.parameters())}

