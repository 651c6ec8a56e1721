"""``python -m edsam ldm-*``: building, training, releasing and judging latent diffusion models.

Every command here loads diffusers / transformers models, so each sets
``model_libraries=True``: ``edsam.cli`` quiets those libraries' load-time
warnings for it (and only for it, as importing them is slow).
"""

from __future__ import annotations

import json
from pathlib import Path


def _cmd_ldm_init(args) -> int:
    from edsam.ldm.models import TinyLDMSpec, build_tiny_pipeline, save_tiny_pipeline

    values = json.loads(args.spec)
    spec = TinyLDMSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    save_tiny_pipeline(build_tiny_pipeline(spec, Path(args.out).parent / "work", seed=args.seed), spec, args.out)
    return 0


def _cmd_ldm_build(args) -> int:
    from edsam.ldm.architecture import build_random_pipeline

    facts = build_random_pipeline(args.architecture, args.out, seed=args.seed, half=not args.fp32)
    print(json.dumps({k: facts[k] for k in ("pipeline", "parameters", "dtype")}))
    return 0


def _cmd_ldm_train(args) -> int:
    from edsam.download import shard_paths
    from edsam.ldm.train import LDMTrainSettings, train_ldm

    facts = train_ldm(args.source, shard_paths(args.manifest), args.out, LDMTrainSettings(**json.loads(args.settings)))
    print(json.dumps({k: facts[k] for k in ("final_step", "first_loss", "final_loss", "seconds_this_run")}))
    return 0


def _cmd_ldm_release(args) -> int:
    from edsam.ldm.pipeline import release_pipeline

    print(release_pipeline(args.source, args.out, half=not args.fp32))
    return 0


def _cmd_ldm_fidelity(args) -> int:
    from edsam.augment.sampler import SamplerSettings
    from edsam.fileio import write_json_atomic
    from edsam.ldm.fidelity import evaluate_fidelity
    from edsam.ldm.pipeline import LatentDiffusion

    settings = json.loads(args.settings)
    ldm = LatentDiffusion.load(args.ldm, local_files_only=True)
    result = evaluate_fidelity(ldm, settings["corpus"], settings["fidelity"], SamplerSettings(**settings["sampler"]),
                               settings["seed"], args.grid)
    result["ldm"] = args.ldm
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def register(sub) -> None:
    init = sub.add_parser("ldm-init", help="a randomly initialised tiny LDM, saved as a diffusers pipeline")
    init.add_argument("--spec", required=True, help="the config's ldm.tiny block, as JSON")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--out", required=True)
    init.set_defaults(func=_cmd_ldm_init, model_libraries=True)

    build = sub.add_parser("ldm-build", help="a published pipeline architecture with random weights (diffusers folder)")
    build.add_argument("--architecture", required=True, help="a folder of component configs, or a name under "
                                                               "models/architectures/")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--fp32", action="store_true", help="write fp32 weights (default: fp16, half the size)")
    build.add_argument("--out", required=True)
    build.set_defaults(func=_cmd_ldm_build, model_libraries=True)

    train = sub.add_parser("ldm-train", help="train one stage of an LDM on the shards a manifest lists")
    train.add_argument("--source", required=True, help="the pipeline folder to start from")
    train.add_argument("--manifest", required=True, help="a manifest.json listing the training shards")
    train.add_argument("--settings", required=True, help="LDMTrainSettings as JSON")
    train.add_argument("--out", required=True)
    train.set_defaults(func=_cmd_ldm_train, model_libraries=True)

    release = sub.add_parser("ldm-release", help="copy a trained pipeline for committing, with SHA256SUMS")
    release.add_argument("--source", required=True)
    release.add_argument("--out", required=True)
    release.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    release.set_defaults(func=_cmd_ldm_release, model_libraries=True)

    fidelity = sub.add_parser("ldm-fidelity", help="judge an LDM's outputs with a classifier of real images")
    fidelity.add_argument("--ldm", required=True)
    fidelity.add_argument("--settings", required=True)
    fidelity.add_argument("--out", required=True)
    fidelity.add_argument("--grid", required=True, help="PNG: real | resampled | ED-SAM per rho | generated")
    fidelity.set_defaults(func=_cmd_ldm_fidelity, model_libraries=True)
