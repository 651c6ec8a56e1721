# Evaluation: one job per trained run, running its whole plan (zero-shot on
# evaluate.zeroshot, linear probe on evaluate.linear_probe, fine-tuning on
# evaluate.primary) in one process, one JSON per (benchmark, task):
#   results/eval/<dataset>/<model>/<method>-<regulariser>/<data>/<benchmark>/<task>.json
# A failing job (missing root, class-count mismatch) leaves the other runs'
# jobs running with --keep-going (set in the profiles).


rule benchmark_from_corpus:
    input:
        rules.corpus.output.metadata,
    output:
        f"{RESULTS}/benchmarks/{{benchmark}}/benchmark.json",
    params:
        domain=lambda wildcards: config["evaluate"]["benchmarks"][wildcards.benchmark]["corpus_domain"],
        corpus=lambda wildcards, input: os.path.dirname(input[0]),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/benchmarks/{{benchmark}}.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam benchmark-from-corpus --corpus {params.corpus:q} --domain {params.domain:q}"
        " --out {params.out:q} > {log:q} 2>&1"


if EVALUATIONS:

    rule evaluate_run:
        input:
            weights=rules.train_clip.output.weights,
            facts=rules.train_clip.output.facts,
            benchmarks=[benchmark_marker(name) for name in dict.fromkeys(b for b, _ in EVALUATIONS)],
        output:
            [f"{RESULTS}/eval/{TRAIN_RUN}/{benchmark}/{task}.json" for benchmark, task in EVALUATIONS],
        params:
            plan=lambda wildcards, output: json.dumps(evaluation_plan(output)),
            model_dir=lambda wildcards, input: os.path.dirname(input.weights),
            settings=lambda wildcards: json.dumps(evaluate_settings()),
        log:
            f"{LOGS}/eval/{TRAIN_RUN}.log",
        threads: lambda wildcards: max(1, config["evaluate"]["workers"] + 1)
        resources:
            gpus=config["evaluate"]["gpus"],
        conda:
            "../../envs/train.yaml"
        shell:
            "python -m edsam evaluate --plan {params.plan:q} --model-dir {params.model_dir:q}"
            " --train-facts {input.facts:q} --settings {params.settings:q} > {log:q} 2>&1"
