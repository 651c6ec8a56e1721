# Evaluation: one job per trained run, running its plan in one process
# (zero-shot on evaluate.primary, linear probe on evaluate.linear_probe,
# fine-tuning on the primary), and, only for the runs whose results are asked
# for, one more for zero-shot on the other evaluate.zeroshot benchmarks; one
# JSON per (benchmark, task):
#   results/eval/<dataset>/<model>/<method>-<regulariser>/<data>/<benchmark>/<task>.json
# A failing job (missing root, class-count mismatch) leaves the other runs'
# jobs running with --keep-going (set in the profiles).


rule benchmark_from_corpus:
    input:
        rules.corpus.output.metadata,
    output:
        LAYOUT.benchmark("{benchmark}", "benchmark.json"),
    params:
        domain=lambda wildcards: config["evaluate"]["benchmarks"][wildcards.benchmark]["corpus_domain"],
        corpus=lambda wildcards, input: os.path.dirname(input[0]),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/benchmarks/{{benchmark}}.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam benchmark-from-corpus --corpus {params.corpus:q} --domain {params.domain:q}"
        " --out {params.out:q} > {log:q} 2>&1"


if RUN_EVALUATIONS:

    rule evaluate_run:
        input:
            weights=rules.train_clip.output.weights,
            facts=rules.train_clip.output.facts,
            benchmarks=benchmark_markers(RUN_EVALUATIONS),
        output:
            evaluation_outputs(RUN_EVALUATIONS),
        params:
            plan=lambda wildcards, output: as_json(job_settings.evaluation_plan(PLAN, RUN_EVALUATIONS, output)),
            model_dir=lambda wildcards, input: os.path.dirname(input.weights),
            settings=lambda wildcards: as_json(job_settings.evaluate(PLAN)),
        log:
            f"{LOGS}/eval/{TRAIN_RUN}.log",
        threads: lambda wildcards: max(1, config["evaluate"]["workers"] + 1)
        resources:
            **stage_resources("evaluate", gpu=config["evaluate"]["gpus"]),
        conda:
            "../../envs/train.yaml"
        shell:
            "python -m edsam evaluate --plan {params.plan:q} --model-dir {params.model_dir:q}"
            " --train-facts {input.facts:q} --settings {params.settings:q} > {log:q} 2>&1"


if EXTRA_ZEROSHOT:

    use rule evaluate_run as evaluate_zeroshot_extra with:
        input:
            weights=rules.train_clip.output.weights,
            facts=rules.train_clip.output.facts,
            benchmarks=benchmark_markers(EXTRA_ZEROSHOT),
        output:
            evaluation_outputs(EXTRA_ZEROSHOT),
        params:
            plan=lambda wildcards, output: as_json(job_settings.evaluation_plan(PLAN, EXTRA_ZEROSHOT, output)),
            model_dir=lambda wildcards, input: os.path.dirname(input.weights),
            settings=lambda wildcards: as_json(job_settings.evaluate(PLAN)),
        log:
            f"{LOGS}/eval/{TRAIN_RUN}.zeroshot_extra.log",
