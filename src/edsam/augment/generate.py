"""One source shard -> its M synthetic webdataset shards, one per copy j (ED-SAM, spec section 2).

Copy j of every image of a source shard goes to that shard's j-th synthetic
tar, so each synthetic tar is the size of its real one and holds each source
image once. Training reads a shard at a time through a finite shuffle buffer
(open_clip_train), so copies written side by side (``<key>_000 ... <key>_00M``
in one tar, the old layout) met in one batch: contrastive false negatives with
identical captions, more of them the larger M (benchmarks/batch_composition.py
measures it). Split by j, an image's copies are as far apart as two random
shards of the set.

Samples are sorted by key before batching, and each synthetic sample's alpha
and noise come from a generator seeded by (seed, source key, j), so a shard's
output does not depend on the order img2dataset wrote it in. Corrupt or
undecodable images are skipped and counted; an empty shard gives empty, valid
tars. The tars are written beside their final names and renamed at the end,
with fixed member mtimes, so a killed job leaves nothing half-written and the
same inputs give the same bytes (on the same device and batch size).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from edsam.augment.sampler import EDSAMSampler, SamplerSettings
from edsam.fileio import atomic_path
from edsam.ldm.imaging import to_model_tensor, to_uint8
from edsam.shards import decode_image, dotted_member_names, image_bytes, iter_samples, read_caption, safe_member_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentSettings:
    m: int = 10
    rho: float = 0.5
    seed: int = 0
    resolution: int = 256
    batch_size: int = 32
    max_image_pixels: int = 89_478_485
    max_caption_chars: int = 1000
    encode_format: str = "jpg"
    model_id: str = ""
    max_samples: int | None = None  # the first N samples (by key) of each shard only; None: all

    def record(self) -> dict:
        """The settings a shard's stats record (and a rerun must match); an unset limit is left out, so shards
        made before the limit existed still count as finished."""
        values = asdict(self)
        if self.max_samples is None:
            del values["max_samples"]
        return values

    def __post_init__(self):
        if self.m < 1:  # M = 0 is only the report's name for real data (no synthetic set)
            raise ValueError(f"augment: M (synthetic samples per image) must be at least 1, got M = {self.m}")


def synthetic_key(source_key: str, j: int) -> str:
    """The member key of copy ``j`` of source image ``source_key`` (the one place synthetic keys are built);
    a hostile source key (../x, /x, control characters, a dot) never becomes a member name."""
    return f"{safe_member_key(source_key)}_{j:03d}"


def sample_seed(seed: int, key: str, j: int) -> int:
    digest = hashlib.sha256(f"{seed}/{key}/{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def load_real_samples(tar_path, resolution: int, max_pixels: int, max_caption_chars: int):
    """(key, image tensor in [-1, 1], caption) sorted by key, and the count of skipped samples by reason."""
    kept, skipped = [], {}
    for sample in iter_samples(tar_path):
        key = sample["__key__"]
        if dotted := dotted_member_names(sample):  # webdataset cut the key at its dot: no jpg or txt member
            skipped["key with a dot"] = skipped.get("key with a dot", 0) + 1
            log.warning("%s: skipping %s: the key holds a dot, so webdataset reads them as key %r",
                        tar_path, ", ".join(map(repr, dotted)), key)
            continue
        caption = read_caption(sample)[:max_caption_chars]
        try:
            if not caption:
                raise ValueError("missing caption")
            data = image_bytes(sample)
            if data is None:
                raise ValueError("no image member")
            image = decode_image(data, max_pixels).resize((resolution, resolution), Image.Resampling.BICUBIC)
        except Exception as err:  # noqa: BLE001 - any undecodable sample is skipped, counted, logged
            reason = "missing caption" if str(err) == "missing caption" else "undecodable image"
            skipped[reason] = skipped.get(reason, 0) + 1
            log.warning("%s: skipping %s: %s", tar_path, key, err)
            continue
        kept.append((key, to_model_tensor(image), caption))
    kept.sort(key=lambda item: item[0])
    return kept, skipped


def to_image_bytes(image: torch.Tensor, encode_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG" if encode_format == "jpg" else "PNG", quality=95)
    return buffer.getvalue()


def generate_batch(sampler: EDSAMSampler, batch, settings: AugmentSettings):
    """Run one batch; alpha and noise per synthetic sample come from that sample's own seed."""
    keys, images, captions = zip(*batch)
    seeds = [sample_seed(settings.seed, key, j) for key in keys for j in range(settings.m)]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    outputs, alphas = sampler.generate(torch.stack(images), list(captions), settings.m, settings.rho, generators)
    return keys, captions, seeds, outputs, alphas


def sample_provenance(sampler: EDSAMSampler, settings: AugmentSettings, source_tar) -> dict:
    """What every synthetic sample of a shard records besides its own source key, j, alpha and seed.

    Inversion is never guided (spec section 2: DDIM inversion conditioned on the caption); sampling back
    uses ``guidance_scale``. Both are written out, so a sample made with guidance says so by itself.
    """
    return {"model_id": settings.model_id, "steps": sampler.settings.steps, "rho": settings.rho, "m": settings.m,
            "transform": sampler.settings.transform, "inversion": sampler.settings.inversion,
            "guidance_scale": sampler.settings.guidance_scale, "inversion_guidance_scale": 1.0,
            "sampling_guidance_scale": sampler.settings.guidance_scale, "source_shard": Path(source_tar).name}


def augment_shard(sampler: EDSAMSampler, source_tar, out_tars: list, settings: AugmentSettings,
                  progress=None) -> dict:
    """Write the synthetic shards of ``source_tar`` (``out_tars[j]`` gets copy j of every image); its stats."""
    import webdataset as wds

    if len(out_tars) != settings.m:
        raise ValueError(f"{source_tar}: M = {settings.m} needs {settings.m} synthetic tars, got {len(out_tars)}")
    started = time.monotonic()
    real, skipped = load_real_samples(source_tar, settings.resolution, settings.max_image_pixels,
                                      settings.max_caption_chars)
    real = real[: settings.max_samples]
    provenance = sample_provenance(sampler, settings, source_tar)
    with contextlib.ExitStack() as stack:
        # entered as (tmp path, writer) pairs: each writer closes before its tar is renamed into place
        sinks = [stack.enter_context(wds.TarWriter(str(stack.enter_context(atomic_path(path))), mtime=0))
                 for path in out_tars]
        for start in range(0, len(real), settings.batch_size):
            keys, captions, seeds, outputs, alphas = generate_batch(
                sampler, real[start : start + settings.batch_size], settings)
            for index, image in enumerate(outputs):
                source, j = keys[index // settings.m], index % settings.m
                meta = {**provenance, "source_key": source, "j": j, "alpha": float(alphas[index]),
                        "seed": seeds[index]}
                sinks[j].write({"__key__": synthetic_key(source, j),
                                settings.encode_format: to_image_bytes(image, settings.encode_format),
                                "txt": captions[index // settings.m], "json": json.dumps(meta, sort_keys=True)})
            if progress is not None:
                progress.update(len(keys))
    seconds = time.monotonic() - started
    written = len(real) * settings.m
    return {"source": str(source_tar), "real_samples": len(real), "skipped": skipped, "synthetic_samples": written,
            "copies": [{"j": j, "tar": Path(path).name, "samples": len(real)} for j, path in enumerate(out_tars)],
            "seconds": round(seconds, 3), "real_images_per_second": round(len(real) / seconds, 3) if seconds else None,
            "synthetic_images_per_second": round(written / seconds, 3) if seconds else None,
            "settings": settings.record(), "sampler": asdict(sampler.settings)}


def load_sampler(ldm_source: str, sampler_settings: SamplerSettings, local_files_only: bool = True,
                 device: str | None = None, precision: str = "fp32") -> tuple[EDSAMSampler, dict]:
    """The LDM as an ED-SAM sampler, and the device facts every shard's stats record."""
    from edsam.ldm.pipeline import LatentDiffusion

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if device == "cpu":
        dtype = torch.float32  # half precision on CPU is slower and less accurate
    ldm = LatentDiffusion.load(ldm_source, local_files_only=local_files_only, device=device, dtype=dtype)
    return EDSAMSampler(ldm, sampler_settings), {"device": device, "dtype": str(dtype)}


def augment_shard_file(sampler: EDSAMSampler, source_tar, out_tars: list, settings: AugmentSettings) -> dict:
    """One source shard with a progress bar and a log line (the job's unit of work; see edsam.augment.groups)."""
    from tqdm import tqdm

    with tqdm(desc=Path(source_tar).name, unit="img") as progress:
        stats = augment_shard(sampler, source_tar, out_tars, settings, progress)
    log.info("%s: %d real -> %d synthetic images, %.2f synthetic img/s", source_tar, stats["real_samples"],
             stats["synthetic_samples"], stats["synthetic_images_per_second"] or 0)
    return stats
