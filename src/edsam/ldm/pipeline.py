"""One interface over diffusers text-to-image latent diffusion pipelines.

Paper scale loads a pretrained pipeline (a local folder or a hub id, offline
with ``local_files_only``); the embedded default loads the project's tiny one
from a local folder the same way. Two families are handled:

* Stable-Diffusion layout: ``vae`` (AutoencoderKL), ``text_encoder``, ``tokenizer``;
* the original LDM layout (``CompVis/ldm-text2im-large-256``): ``vqvae``, ``bert``, ``tokenizer``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edsam.fileio import sha256_file, write_bytes_atomic

CHECKSUM_FILE = "SHA256SUMS"


def verify_checksums(folder: str | Path) -> None:
    """Check every file a released pipeline's SHA256SUMS lists (sha256sum format)."""
    folder = Path(folder)
    for line in (folder / CHECKSUM_FILE).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = folder / name.lstrip("*")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {folder / CHECKSUM_FILE} but missing")
        if sha256_file(path) != digest:
            raise ValueError(f"{path}: sha256 does not match {folder / CHECKSUM_FILE} (corrupt or altered weights)")


def release_pipeline(source: str | Path, out_dir: str | Path, half: bool = True) -> Path:
    """Copy a trained pipeline to ``out_dir`` (fp16 weights if ``half``) with a SHA256SUMS file."""
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(source), local_files_only=True)
    if half:
        pipeline.to(torch.float16)
    out_dir = Path(out_dir)
    pipeline.save_pretrained(str(out_dir), safe_serialization=True)
    for extra in Path(source).glob("*.json"):
        if extra.name != "model_index.json":
            write_bytes_atomic(out_dir / extra.name, extra.read_bytes())
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)
    lines = [f"{sha256_file(p)}  {p.relative_to(out_dir)}" for p in files]
    write_bytes_atomic(out_dir / CHECKSUM_FILE, ("\n".join(lines) + "\n").encode())
    return out_dir / CHECKSUM_FILE


class LatentDiffusion:
    """Encode images and captions, decode latents; holds the UNet and the schedule.

    ``names`` maps the roles (``autoencoder``, ``text_encoder``, ``unet``) to the
    pipeline's attribute names, which differ between the two layouts.
    """

    def __init__(self, pipeline, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.pipeline = pipeline
        self.names = {"unet": "unet", "autoencoder": "vae" if getattr(pipeline, "vae", None) is not None else "vqvae",
                      "text_encoder": "text_encoder" if getattr(pipeline, "text_encoder", None) is not None else "bert"}
        self.tokenizer = pipeline.tokenizer
        self.scheduler_config = dict(pipeline.scheduler.config)
        self.device, self.dtype = torch.device(device), dtype
        for module in (self.unet, self.autoencoder, self.text_encoder):
            module.to(self.device, dtype=dtype).eval().requires_grad_(False)
        self.is_vq = type(self.autoencoder).__name__ == "VQModel"

    unet = property(lambda self: getattr(self.pipeline, self.names["unet"]))
    autoencoder = property(lambda self: getattr(self.pipeline, self.names["autoencoder"]))
    text_encoder = property(lambda self: getattr(self.pipeline, self.names["text_encoder"]))

    @classmethod
    def load(cls, source: str, local_files_only: bool = True, device="cpu", dtype=torch.float32):
        from diffusers import DiffusionPipeline

        if (Path(source) / CHECKSUM_FILE).exists():
            verify_checksums(source)
        pipeline = DiffusionPipeline.from_pretrained(source, local_files_only=local_files_only, use_safetensors=None)
        return cls(pipeline, device=device, dtype=dtype)

    def reinitialise(self, role: str) -> None:
        """Replace a component by a freshly initialised one of the same configuration (Table 4's retraining)."""
        module = getattr(self, role)
        if hasattr(type(module), "from_config") and not hasattr(module, "base_model_prefix"):
            fresh = type(module).from_config(module.config)  # a diffusers model
        else:
            fresh = type(module)(module.config)  # a transformers model
        fresh.to(self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.pipeline.register_modules(**{self.names[role]: fresh})

    def save(self, out_dir: str | Path) -> None:
        self.pipeline.save_pretrained(str(out_dir), safe_serialization=True)

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.autoencoder.config, "scaling_factor", 1.0) or 1.0)

    @property
    def image_size(self) -> int:
        """The resolution the UNet was trained for: latent size times the autoencoder's downsampling."""
        return self.unet.config.sample_size * 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    @property
    def max_tokens(self) -> int:
        """Tokens per caption: the tokenizer's limit, capped by the text encoder's positions (the paper's LDM
        ships a BERT tokenizer that allows 512 tokens beside an LDMBert with 77 positions)."""
        positions = getattr(self.text_encoder.config, "max_position_embeddings", None) or 512
        return min(self.tokenizer.model_max_length, positions)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(captions), padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return tokens.input_ids.to(self.device)

    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """The text encoder's hidden states the UNet cross-attends to (with gradients, for training)."""
        return self.text_encoder(self.tokenize(captions))[0].to(self.dtype)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return self.text_embeddings(captions)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (B, 3, H, W) -> scaled latents (the posterior mean for a KL autoencoder)."""
        images = images.to(self.device, self.dtype)
        if self.is_vq:
            return self.autoencoder.encode(images).latents * self.scaling_factor
        return self.autoencoder.encode(images).latent_dist.mean * self.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.autoencoder.decode(latents / self.scaling_factor).sample.clamp(-1, 1)
