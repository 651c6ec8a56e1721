"""A CLIP teacher's embeddings of every image of a DomainBed dataset, computed once.

Zero-shot, the linear probe and VL2V-ADiP's distillation targets all read the
same frozen embeddings, so they are computed in one job per (dataset,
teacher): the black-box setting of VL2V-ADiP (the client queries the teacher
once per image) and one pass over DomainNet's 586k images instead of three.

Each image is decoded with the download stage's pixel cap. An image that
cannot be decoded is left out and listed (file and reason) in the features'
JSON; more than ``max_bad_fraction`` of a domain fails the job, naming files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

from edsam.domainbed.datasets import DomainBedDataset, DomainBedError
from edsam.fileio import atomic_path, sha256_file, write_json_atomic


class ImageList(torch.utils.data.Dataset):
    """(image tensor, label, position, "") for positions of one domain; a bad file raises, or with ``skip_bad``
    yields (None, label, position, reason)."""

    def __init__(self, root, paths, labels, positions, transform, max_pixels: int, skip_bad: bool = False):
        self.root, self.paths, self.labels = Path(root), paths, labels
        self.positions, self.transform, self.max_pixels = list(positions), transform, max_pixels
        self.skip_bad = skip_bad

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, index):
        from edsam.shards import decode_image

        position = self.positions[index]
        path = self.root / self.paths[position]
        try:
            image = self.transform(decode_image(path.read_bytes(), self.max_pixels))
        except Exception as error:  # PIL raises many types on hostile files
            if not self.skip_bad:
                raise DomainBedError(f"{path}: unreadable image ({error})") from None
            return None, self.labels[position], position, f"{type(error).__name__}: {error}"
        return image, self.labels[position], position, ""


def _collate_skipping_bad(batch):
    good = [item for item in batch if item[0] is not None]
    bad = [(position, reason) for image, _, position, reason in batch if image is None]
    images = torch.stack([item[0] for item in good]) if good else None
    return images, torch.tensor([item[2] for item in good], dtype=torch.long), bad


@dataclass(frozen=True)
class FeatureSettings:
    batch_size: int = 256
    workers: int = 4
    max_pixels: int = 16_777_216
    max_bad_fraction: float = 0.01
    templates: tuple[str, ...] = ("a photo of a {c}.",)


def load_teacher(model_dir: str, device: str):
    """An open_clip ``local-dir:`` checkpoint (config + safetensors: no pickle is executed)."""
    import open_clip

    for needed in ("open_clip_config.json", "open_clip_model.safetensors"):  # open_clip would random-init
        if not (Path(model_dir) / needed).is_file():
            raise DomainBedError(f"{Path(model_dir) / needed}: teacher file missing (domainbed.teachers: an "
                                 "open_clip local-dir folder holds open_clip_config.json and open_clip_model.safetensors)")
    name = f"local-dir:{model_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)


def text_embeddings(model, tokenizer, classnames, templates, device) -> torch.Tensor:
    """(classes, dim) unit vectors, by clip_benchmark's own prompt-ensemble classifier."""
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    with torch.no_grad():
        return zero_shot_classifier(model, tokenizer, classnames, list(templates), device, amp=False).T.float().cpu().contiguous()


def _domain_embeddings(model, dataset: DomainBedDataset, domain_index: int, preprocess, settings, device):
    domain = dataset.domains[domain_index]
    images = ImageList(dataset.root, domain.paths, domain.labels, range(len(domain.paths)), preprocess,
                       settings.max_pixels, skip_bad=True)
    loader = torch.utils.data.DataLoader(images, batch_size=settings.batch_size, num_workers=settings.workers,
                                         collate_fn=_collate_skipping_bad)
    embeddings, positions, bad = [], [], []
    with torch.no_grad():
        for batch, batch_positions, batch_bad in loader:
            bad += [{"path": str(Path(dataset.root) / domain.paths[p]), "error": reason} for p, reason in batch_bad]
            if batch is not None:
                embeddings.append(F.normalize(model.encode_image(batch.to(device)).float(), dim=-1).cpu())
                positions.append(batch_positions)
    if len(bad) > settings.max_bad_fraction * len(domain.paths):
        listed = "; ".join(f"{b['path']}: {b['error']}" for b in bad[:5])
        raise DomainBedError(f"{Path(dataset.root) / domain.name}: {len(bad)} of {len(domain.paths)} images unreadable "
                             f"(over max_bad_fraction={settings.max_bad_fraction}): {listed}")
    if not embeddings:
        raise DomainBedError(f"{Path(dataset.root) / domain.name}: no readable image")
    return torch.cat(embeddings), torch.cat(positions), bad


def compute_features(dataset: DomainBedDataset, model_dir: str, out: str | Path, settings: FeatureSettings,
                     device: str | None = None) -> dict:
    """Write ``out`` (.safetensors: ``image/<domain>``, ``position/<domain>``, ``text``) and its JSON beside it."""
    from safetensors.torch import save_file

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    started, out = time.time(), Path(out)
    model, preprocess, tokenizer = load_teacher(model_dir, device)
    tensors = {"text": text_embeddings(model, tokenizer, dataset.classnames, settings.templates, device)}
    facts = {"bad_images": [], "images": {}}
    for index, domain in enumerate(dataset.domains):
        embeddings, positions, bad = _domain_embeddings(model, dataset, index, preprocess, settings, device)
        tensors[f"image/{domain.name}"], tensors[f"position/{domain.name}"] = embeddings.contiguous(), positions
        facts["bad_images"] += bad
        facts["images"][domain.name] = len(positions)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp))
    weights = Path(model_dir) / "open_clip_model.safetensors"
    facts.update(root=dataset.root, listing_sha256=dataset.digest(), classnames=dataset.classnames,
                 domains=[d.name for d in dataset.domains], templates=list(settings.templates),
                 teacher=str(model_dir), teacher_sha256=sha256_file(weights),
                 embed_dim=int(tensors["text"].shape[1]), device=device, seconds=round(time.time() - started, 2),
                 versions={p: version(p) for p in ("open_clip_torch", "clip-benchmark", "torch")})
    write_json_atomic(out.with_suffix(".json"), facts)
    return facts


def load_features(path: str | Path, dataset: DomainBedDataset) -> tuple[dict, dict]:
    """The tensors and facts of :func:`compute_features`; refuses features of another listing."""
    import json

    from safetensors.torch import load_file

    path = Path(path)
    facts = json.loads(path.with_suffix(".json").read_text())
    if facts["listing_sha256"] != dataset.digest():
        raise DomainBedError(f"{path}: computed for another listing of {facts['root']} (files were added or "
                             "removed since): delete it and rerun")
    return load_file(str(path)), facts
