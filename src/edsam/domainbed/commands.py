"""``python -m edsam domainbed-*`` and ``vl2v``: the domain-generalisation stage's jobs.

(``domainbed-from-corpus``, the demo corpus as a DomainBed root, is in
``edsam.demo.commands``.)

Every job gets the dataset's settings as one JSON argument (``--settings``):
``root``, ``domains``, ``holdout_fraction``, ``trial_seed``, ``seed``,
``max_pixels`` and the ``domainbed`` config block's ``templates``,
``batch_size``, ``workers``, ``max_bad_fraction``, ``probe`` and ``vl2v``
(with the dataset's step overrides applied).
"""

from __future__ import annotations

import json
import sys

from edsam.domainbed.datasets import DomainBedError


def _dataset(settings: dict):
    from edsam.domainbed.datasets import load_domainbed

    return load_domainbed(settings["root"], settings["domains"])


def _features(args, settings):
    from edsam.domainbed.features import load_features

    return load_features(args.features, _dataset(settings))


def _cmd_features(args) -> int:
    from edsam.domainbed.features import FeatureSettings, compute_features

    settings = json.loads(args.settings)
    feature_settings = FeatureSettings(batch_size=settings["batch_size"], workers=settings["workers"],
                                       max_pixels=settings["max_pixels"], max_bad_fraction=settings["max_bad_fraction"],
                                       templates=tuple(settings["templates"]))
    facts = compute_features(_dataset(settings), args.teacher, args.out, feature_settings)
    print(json.dumps({"images": facts["images"], "bad_images": len(facts["bad_images"]), "seconds": facts["seconds"]}))
    return 0


def _cmd_clip(args) -> int:
    from edsam.domainbed.clip_eval import ProbeSettings, evaluate_clip
    from edsam.fileio import write_json_atomic

    settings = json.loads(args.settings)
    tensors, facts = _features(args, settings)
    probe = ProbeSettings(c_values=tuple(settings["probe"]["c_values"]), max_iter=settings["probe"]["max_iter"])
    result = evaluate_clip(tensors, facts, _dataset(settings), settings["holdout_fraction"], settings["trial_seed"],
                           probe, settings["seed"])
    write_json_atomic(args.out, result)
    print(json.dumps(result["average"]))
    return 0


def _cmd_vl2v(args) -> int:
    from edsam.domainbed.datasets import leave_one_out
    from edsam.domainbed.vl2v import VL2VSettings, run_vl2v

    settings = json.loads(args.settings)
    dataset = _dataset(settings)
    tensors, facts = _features(args, settings)
    vl2v = {k: v for k, v in settings["vl2v"].items() if k != "variants"}
    vl2v_settings = VL2VSettings(variant=args.variant, workers=settings["workers"], seed=settings["seed"],
                                 max_pixels=settings["max_pixels"], **vl2v)
    split = leave_one_out(dataset, args.target, settings["holdout_fraction"], settings["trial_seed"])
    result = run_vl2v(dataset, split, tensors, facts, vl2v_settings, args.out, args.weights)
    print(json.dumps({"target": result["target"], "test_acc": result["test_acc"], "selected_step":
                      [result["selected"]["stage"], result["selected"]["step"]], "seconds": result["seconds"]}))
    return 0


def _cmd_table(args) -> int:
    from edsam.domainbed.report import write_domainbed_table

    table = write_domainbed_table(args.clip, args.vl2v, args.published, json.loads(args.settings), args.csv,
                                  args.md, args.effect)
    print(table[["dataset", "teacher", "method", "average"]].to_string(index=False))
    return 0


def _guarded(command):
    """A bad DomainBed root or file ends the job with one line naming it, not a traceback."""

    def run(args) -> int:
        try:
            return command(args)
        except DomainBedError as err:
            print(f"edsam {args.command}: error: {err}", file=sys.stderr)
            return 1

    return run


def register(sub) -> None:
    features = sub.add_parser("domainbed-features", help="a CLIP teacher's embeddings of every image of a DomainBed root")
    features.add_argument("--teacher", required=True, help="an open_clip local-dir model folder")
    features.add_argument("--settings", required=True)
    features.add_argument("--out", required=True, help=".safetensors (its facts go to the .json beside it)")
    features.set_defaults(func=_guarded(_cmd_features))

    clip = sub.add_parser("domainbed-clip", help="zero-shot and linear probe per held-out domain")
    clip.add_argument("--features", required=True)
    clip.add_argument("--settings", required=True)
    clip.add_argument("--out", required=True)
    clip.set_defaults(func=_guarded(_cmd_clip))

    vl2v = sub.add_parser("vl2v", help="VL2V-ADiP / VL2V-SD: distil the teacher into a student, one held-out domain")
    vl2v.add_argument("--features", required=True)
    vl2v.add_argument("--settings", required=True)
    vl2v.add_argument("--variant", required=True, choices=["adip", "sd"])
    vl2v.add_argument("--target", required=True, help="the held-out domain")
    vl2v.add_argument("--out", required=True)
    vl2v.add_argument("--weights", required=True, help="the selected student (.safetensors)")
    vl2v.set_defaults(func=_guarded(_cmd_vl2v))

    table = sub.add_parser("domainbed-table", help="the domain-generalisation table beside the published VL2V-SD")
    table.add_argument("--clip", nargs="*", default=[], help="clip.json results")
    table.add_argument("--vl2v", nargs="*", default=[], help="vl2v-<variant>/<target>.json results")
    table.add_argument("--published", required=True, help="data/vl2v_published.csv")
    table.add_argument("--settings", required=True, help='{"results_dir", "report_as", "compare"}')
    table.add_argument("--csv", required=True)
    table.add_argument("--md", required=True)
    table.add_argument("--effect", required=True, help="CSV: ED-SAM teacher minus baseline teacher")
    table.set_defaults(func=_guarded(_cmd_table))
