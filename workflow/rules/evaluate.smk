# Evaluation: one job per (trained run, benchmark, task), each writing one JSON
#   results/eval/<dataset>/<model>/<method>-<regulariser>/<data>/<benchmark>/<task>.json
# task: zeroshot_classification | linear_probe (clip_benchmark) | finetune.
# A failing job (missing root, class-count mismatch) leaves the others running
# with --keep-going (set in the profiles).


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


rule evaluate_checkpoint:
    input:
        weights=rules.train_clip.output.weights,
        facts=rules.train_clip.output.facts,
        benchmark=benchmark_inputs,
    output:
        f"{RESULTS}/eval/{TRAIN_RUN}/{{benchmark}}/{{task}}.json",
    params:
        root=lambda wildcards: benchmark_root(wildcards.benchmark),
        dataset=lambda wildcards: benchmark_dataset(wildcards.benchmark),
        model_dir=lambda wildcards, input: os.path.dirname(input.weights),
        settings=lambda wildcards: json.dumps(evaluate_settings()),
    log:
        f"{LOGS}/eval/{TRAIN_RUN}/{{benchmark}}/{{task}}.log",
    threads: lambda wildcards: max(1, config["evaluate"]["workers"] + 1)
    resources:
        gpus=config["evaluate"]["gpus"],
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam evaluate --task {wildcards.task:q} --benchmark {params.dataset:q} --root {params.root:q}"
        " --model-dir {params.model_dir:q} --train-facts {input.facts:q} --settings {params.settings:q}"
        " --out {output:q} > {log:q} 2>&1"
