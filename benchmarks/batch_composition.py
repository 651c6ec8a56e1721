"""What a training batch holds: same-source pairs and the synthetic share, before and after per-sample mixing.

ED-SAM trains on M synthetic copies of every real image, each with the real
image's caption. Two copies of one image (or a copy and its real image) in one
batch are contrastive false negatives with identical text. This script pushes
the paper config's loader settings through open_clip_train's own data pipeline
and counts, per batch, the same-source pairs and the synthetic share, beside
what i.i.d. sampling gives:

* **before**: the layout and mixing of the code before this change: one
  synthetic tar per source shard, an image's M copies side by side (keys
  ``<key>_000 ... <key>_0MM``), mixed by open_clip's shard weights
  (``--train-data real::synthetic --train-data-upsampling-factors 1::w``,
  w = ratio * real / synthetic), stock ``get_wds_dataset``;
* **after**: what training runs now: one synthetic tar per source shard and
  copy j, the size of its real shard (:mod:`edsam.augment.generate`, named by
  :func:`edsam.augment.groups.shard_paths`, listed as the set's manifest
  lists them), real and synthetic streams mixed per sample
  (:mod:`edsam.train.mixing`), built by ``edsam.train.run.data_arguments``.

Both run open_clip_train's ``get_data`` on the argument namespace that
``open_clip_train.params.parse_args`` makes of the arguments
``edsam.train.run.openclip_arguments`` builds for the paper config (batch,
workers, GPUs as world size, seed, samples per epoch of the ``train.budget``),
with the entry point's rebindings installed (``edsam.train.entry.installed``),
through a real multi-process DataLoader with ``train.workers`` workers and the
pipeline's real shard sampling (ResampledShards2), shuffle buffers
(open_clip_train's sizes), decoding and batching. One stage is substituted:
the tar reader. A paper-scale set (CC3M: 332 shards of ~7,000 live samples,
times M + 1) is 50 GB of tars even with 1-pixel images, so
``tarfile_to_samples_nothrow`` is replaced by a reader that yields, for each
shard URL the pipeline picks, the samples that shard holds, in the order the
writer writes them (member keys from ``edsam.augment.generate.synthetic_key``),
with a 1-pixel JPEG (black: real, white: synthetic) and the source key as
caption. ``--check-tars`` writes small real tars with the new writer and
checks that the reader yields exactly their members.

    python benchmarks/batch_composition.py                   # M = 10 and 20, paper config, CC3M shape
    python benchmarks/batch_composition.py --m 20 --epochs 1 --shards 64
"""

from __future__ import annotations

import argparse
import io
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def tiny_jpeg(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (value,) * 3).save(buffer, format="JPEG")
    return buffer.getvalue()


class VirtualShards:
    """What each shard URL of a virtual set holds, member for member, without the tars.

    URLs: ``<root>/real/shards/<shard>.tar`` (the download's shards), ``<root>/before-m<M>/shards/<shard>.tar``
    (old layout: every image's M copies side by side) and ``<root>/after-m<M>/shards/<shard>_j<jjj>.tar``
    (copy j of every image).
    """

    def __init__(self, per_shard: int):
        self.per_shard = per_shard
        self.real_jpeg, self.synthetic_jpeg = tiny_jpeg(0), tiny_jpeg(255)

    def source_keys(self, shard: int) -> list[str]:
        return [f"{shard:05d}{index:04d}" for index in range(self.per_shard)]  # img2dataset's key layout

    def members(self, url: str):
        from edsam.augment.generate import synthetic_key

        folder, name = url.split("/")[-3], url.split("/")[-1]
        match = re.fullmatch(r"(\d+)(?:_j(\d+))?\.tar", name)
        shard, j = int(match.group(1)), match.group(2)
        keys = self.source_keys(shard)
        if folder == "real":
            return [(key, key, self.real_jpeg) for key in keys]
        if folder.startswith("before"):
            m = int(folder.removeprefix("before-m"))
            return [(synthetic_key(key, jj), key, self.synthetic_jpeg) for key in keys for jj in range(m)]
        return [(synthetic_key(key, int(j)), key, self.synthetic_jpeg) for key in keys]

    def tarfile_to_samples(self, src, handler=None):
        """Stands in for open_clip_train.data.tarfile_to_samples_nothrow: shard URLs -> samples."""
        for item in src:
            for key, source, jpeg in self.members(item["url"]):
                yield {"__key__": key, "__url__": item["url"], "txt": source.encode(), "jpg": jpeg}


def synthetic_flag(image):
    import torch

    return torch.tensor(int(image.getpixel((0, 0))[0] > 127))


def source_id(text):
    import torch

    return [torch.tensor(int(text))]


def old_data_arguments(real, synthetic, ratio: float, budget: str) -> tuple[list[str], int]:
    """``edsam.train.run.data_arguments`` before this change: shard-level mixing by upsampling factors."""
    from edsam.train.run import compact_urls

    real_urls, synthetic_urls = compact_urls(real.paths), compact_urls(synthetic.paths)
    weight = ratio * real.samples / synthetic.samples
    factors = ["1"] * len(real_urls) + [repr(weight)] * len(synthetic_urls)
    args = ["--train-data", "::".join(real_urls + synthetic_urls), "--dataset-resampled",
            "--train-data-upsampling-factors", "::".join(factors)]
    return args, real.samples if budget == "samples" else round(real.samples * (1 + ratio))


def shard_sets(root: str, shards: int, per_shard: int, m: int, layout: str):
    from edsam.augment.groups import shard_paths
    from edsam.train.run import ShardSet

    real = ShardSet(tuple(f"{root}/real/shards/{i:05d}.tar" for i in range(shards)), shards * per_shard)
    if layout == "before":
        paths = tuple(f"{root}/before-m{m}/shards/{i:05d}.tar" for i in range(shards))
    else:  # as the set's manifest lists them: copy-major
        tars = [shard_paths(f"{root}/after-m{m}", f"{i:05d}", m)[0] for i in range(shards)]
        paths = tuple(str(tars[i][j]) for j in range(m) for i in range(shards))
    return real, ShardSet(paths, shards * per_shard * m)


def measure(layout: str, m: int, config: dict, shards: int, per_shard: int, epochs: int, max_batches: int) -> dict:
    """Per-batch same-source pairs and synthetic share through open_clip_train's get_data."""
    import open_clip_train.data as data
    import torch
    from open_clip_train.params import parse_args

    from edsam.train.entry import installed
    from edsam.train.run import TrainSettings, data_arguments, objective, openclip_arguments

    train = config["train"]
    settings = TrainSettings(model="ViT-B-16", batch_size=train["batch_size"], workers=train["workers"],
                             seed=train["seed"], synthetic_ratio=train["synthetic_ratio"], budget=train["budget"])
    real, synthetic = shard_sets("/virtual", shards, per_shard, m, layout)
    if layout == "before":
        data_args, samples = old_data_arguments(real, synthetic, settings.synthetic_ratio, settings.budget)
        mix = None
    else:
        data_args, samples, mix = data_arguments(real, synthetic, settings.synthetic_ratio, settings.budget)
    args = parse_args(openclip_arguments(settings, data_args, samples, Path("/virtual/logs"), "cpu",
                                         distributed=train["gpus"] * train["nodes"] > 1))
    args.world_size, args.rank, args.distributed = max(1, train["gpus"]) * train["nodes"], 0, True
    virtual = VirtualShards(per_shard)
    pairs, fractions = [], []
    original_reader = data.tarfile_to_samples_nothrow
    data.tarfile_to_samples_nothrow = virtual.tarfile_to_samples  # the one substituted stage (module doc)
    try:
        torch.manual_seed(settings.seed)  # open_clip_train's random_seed(seed, rank 0): the workers' base seed
        with installed(objective(settings, None, mix)):
            info = data.get_data(args, (synthetic_flag, synthetic_flag), epoch=0, tokenizer=source_id)["train"]
            for epoch in range(epochs):
                info.set_epoch(epoch)
                for index, (flags, sources) in enumerate(info.dataloader):
                    _, counts = torch.unique(sources, return_counts=True)
                    pairs.append(int((counts * (counts - 1) // 2).sum()))
                    fractions.append(float(flags.float().mean()))
                    if index + 1 >= min(info.dataloader.num_batches, max_batches):
                        break
    finally:
        data.tarfile_to_samples_nothrow = original_reader
    return summary(pairs, fractions, settings.synthetic_ratio / (1 + settings.synthetic_ratio),
                   dict(batches_per_epoch=info.dataloader.num_batches, samples_per_epoch=samples))


def summary(pairs: list[int], fractions: list[float], target: float, extra: dict) -> dict:
    within = sum(abs(f - target) <= 0.10 + 1e-9 for f in fractions) / len(fractions)
    return {"batches": len(pairs), "pairs_per_batch": statistics.fmean(pairs),
            "synthetic_mean": statistics.fmean(fractions), "synthetic_sd": statistics.pstdev(fractions),
            "within_10_points": within, **extra}


def iid(batch: int, sources: int, ratio: float) -> dict:
    """i.i.d. draws from the mixed distribution: every source equally likely (one real sample and M copies
    each, real w.p. 1 / (1 + ratio)), the synthetic count Binomial(batch, ratio / (1 + ratio))."""
    p = ratio / (1 + ratio)
    within = sum(math.comb(batch, k) * p ** k * (1 - p) ** (batch - k)
                 for k in range(batch + 1) if abs(k / batch - p) <= 0.10 + 1e-9)
    return {"pairs_per_batch": batch * (batch - 1) / 2 / sources, "synthetic_mean": p,
            "synthetic_sd": math.sqrt(p * (1 - p) / batch), "within_10_points": within}


def check_tars(per_shard: int = 5, m: int = 3) -> None:
    """The new writer's tars (a stand-in sampler: the layout, not the images, is checked) hold exactly the
    members the virtual reader yields, in the same order."""
    import torch
    import webdataset as wds

    from edsam.augment.generate import AugmentSettings, augment_shard
    from edsam.augment.groups import shard_paths
    from edsam.augment.sampler import SamplerSettings
    from edsam.shards import iter_samples

    class StandInSampler:
        settings = SamplerSettings()

        def generate(self, images, captions, m, rho, generators):
            return torch.zeros(len(images) * m, 3, 8, 8), torch.zeros(len(images) * m)

    virtual = VirtualShards(per_shard)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "00003.tar"
        with wds.TarWriter(str(source)) as sink:
            for key, _, _ in reversed(virtual.members("x/real/shards/00003.tar")):  # out of order, as img2dataset
                sink.write({"__key__": key, "jpg": tiny_jpeg(9), "txt": key})
        tars, _ = shard_paths(Path(tmp) / "after-m3", "00003", m)
        augment_shard(StandInSampler(), source, tars, AugmentSettings(m=m, resolution=8, batch_size=2))
        for tar in tars:
            written = [(s["__key__"], s["txt"].decode()) for s in iter_samples(tar)]
            expected = [(k, s) for k, s, _ in virtual.members(f"{tmp}/after-m3/shards/{tar.name}")]
            assert written == expected, (tar, written[:3], expected[:3])
    print(f"--check-tars: the writer's {m} tars per source shard match the virtual reader member for member")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--dataset", default="cc3m", help="whose shard count and size to take")
    parser.add_argument("--live", type=float, default=0.7, help="share of URLs that download (README: ~70%%)")
    parser.add_argument("--shards", type=int, help="override the dataset's shard count")
    parser.add_argument("--m", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=10**9, help="per epoch")
    parser.add_argument("--check-tars", action="store_true")
    args = parser.parse_args()

    import warnings

    from edsam.config import load_config

    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 8 workers on a small machine

    if args.check_tars:
        check_tars()
    config = load_config(args.config)
    per_shard = round(config["download"]["number_sample_per_shard"] * args.live)
    shards = args.shards or math.ceil(config["datasets"][args.dataset]["expected_samples"]
                                      / config["download"]["number_sample_per_shard"])
    train = config["train"]
    batch, ratio = train["batch_size"], train["synthetic_ratio"]
    print(f"paper config: batch {batch} per GPU, {train['workers']} loader workers, {train['gpus']} GPUs x "
          f"{train['nodes']} nodes, synthetic_ratio {ratio}, budget {train['budget']}; {args.dataset}: {shards} "
          f"shards x {per_shard} samples; open_clip_train sample shuffle buffer "
          f"{__import__('open_clip_train.data').data._SAMPLE_SHUFFLE_SIZE}; {args.epochs} epoch(s), rank 0's batches")
    header = (f"{'M':>3} {'':<8} {'batches':>7} {'same-source pairs/batch':>23} {'x iid':>6} "
              f"{'synthetic share mean':>20} {'sd':>6} {'within +-10 pts':>15} {'s':>5}")
    print(header)
    for m in args.m:
        reference = iid(batch, shards * per_shard, ratio)
        print(f"{m:>3} {'iid':<8} {'':>7} {reference['pairs_per_batch']:>23.4f} {1:>6.2f} "
              f"{reference['synthetic_mean']:>20.3f} {reference['synthetic_sd']:>6.3f} "
              f"{reference['within_10_points']:>15.1%}")
        for layout in ("before", "after"):
            started = time.time()
            figures = measure(layout, m, config, shards, per_shard, args.epochs, args.max_batches)
            print(f"{m:>3} {layout:<8} {figures['batches']:>7} {figures['pairs_per_batch']:>23.4f} "
                  f"{figures['pairs_per_batch'] / reference['pairs_per_batch']:>6.2f} "
                  f"{figures['synthetic_mean']:>20.3f} {figures['synthetic_sd']:>6.3f} "
                  f"{figures['within_10_points']:>15.1%} {time.time() - started:>5.0f}", flush=True)
    print("targets (issue 16): same-source pairs within 1.5x of iid at M = 20; synthetic share within +-10 "
          "points of the configured ratio for >= 90% of batches")


if __name__ == "__main__":
    main()
