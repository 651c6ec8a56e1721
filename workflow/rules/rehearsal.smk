# The paper-scale dress rehearsal (config/rehearsal.yaml over config/config.yaml): generated stand-ins for
# what a user stages -- URL lists in each dataset's own format, benchmark roots with the real class names,
# DomainBed roots with the real domain and class folders -- and the target that runs every stage on them:
#   snakemake rehearsal --configfile config/config.yaml config/rehearsal.yaml --cores 2


rule rehearsal_pairs:
    output:
        f"{RESULTS}/rehearsal/pairs/{{dataset}}/pairs.json",
    params:
        settings=lambda wildcards: as_json(job_settings.rehearsal_input(PLAN, "pairs", wildcards.dataset)),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        kind="pairs",
    log:
        f"{LOGS}/rehearsal/pairs_{{dataset}}.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/download.yaml"
    shell:
        "python -m edsam rehearsal-input --kind {params.kind} --settings {params.settings:q} --out {params.out:q}"
        " > {log:q} 2>&1"


use rule rehearsal_pairs as rehearsal_benchmark with:
    output:
        f"{RESULTS}/rehearsal/benchmarks/{{benchmark}}/benchmark.json",
    params:
        settings=lambda wildcards: as_json(job_settings.rehearsal_input(PLAN, "benchmark", wildcards.benchmark)),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        kind="benchmark",
    log:
        f"{LOGS}/rehearsal/benchmark_{{benchmark}}.log",


use rule rehearsal_pairs as rehearsal_domainbed with:
    output:
        f"{RESULTS}/rehearsal/domainbed/{{dbset}}/domainbed.json",
    params:
        settings=lambda wildcards: as_json(job_settings.rehearsal_input(PLAN, "domainbed", wildcards.dbset)),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        kind="domainbed",
    log:
        f"{LOGS}/rehearsal/domainbed_{{dbset}}.log",


rule rehearsal:
    """Every stage once (what `all` builds), then a summary of what ran."""
    input:
        targets.all_targets(PLAN),
    output:
        f"{RESULTS}/rehearsal/summary.json",
    params:
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),  # <results>/rehearsal/summary.json
    log:
        f"{LOGS}/rehearsal/summary.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam rehearsal-summary --results {params.results:q} --out {output:q} > {log:q} 2>&1"
