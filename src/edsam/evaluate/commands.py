"""``python -m edsam evaluate``: zero-shot, linear probe and fine-tuning of one trained checkpoint."""

from __future__ import annotations

import json

from edsam.cli import fail


def _cmd_evaluate(args) -> int:
    from edsam.evaluate.benchmarks import BenchmarkError
    from edsam.evaluate.run import evaluate_plan

    try:
        results = evaluate_plan(json.loads(args.plan), args.model_dir, json.loads(args.settings), args.train_facts)
    except BenchmarkError as err:
        return fail(args, err)
    for result in results:
        print(json.dumps({"task": result["task"], "benchmark": result["benchmark"], "metrics": result["metrics"]}))
    return 0


def register(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="zero-shot / linear probe (clip_benchmark) and fine-tuning of one checkpoint")
    evaluate.add_argument("--plan", required=True,
                          help='JSON list of {"task": zeroshot_classification|linear_probe|finetune, '
                               '"benchmark": clip_benchmark name (wds/...), "root": webdataset root, "out": result JSON}')
    evaluate.add_argument("--model-dir", required=True, help="an open_clip local-dir model folder")
    evaluate.add_argument("--train-facts", help="the run's train.json (provenance)")
    evaluate.add_argument("--settings", required=True)
    evaluate.set_defaults(func=_cmd_evaluate)
