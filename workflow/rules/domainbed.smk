# Domain generalisation (spec section 8), for every domainbed.datasets x domainbed.teachers:
#   results/domainbed/<dbset>/<teacher>/features.{safetensors,json}   the teacher's embeddings, once
#   results/domainbed/<dbset>/<teacher>/clip.json                     zero-shot + linear probe per held-out domain
#   results/domainbed/<dbset>/<teacher>/vl2v-<variant>/<target>.json  VL2V-ADiP / VL2V-SD student, one held-out domain
#   results/tables/domainbed.{csv,md} + domainbed_effect.csv           beside the published VL2V-SD
# `snakemake domainbed` runs just this stage (and the trainings its teachers need).


rule domainbed_from_corpus:
    input:
        rules.corpus.output.metadata,
    output:
        LAYOUT.domainbed_data("{dbset}", "domainbed.json"),
    params:
        corpus=lambda wildcards, input: os.path.dirname(input[0]),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/domainbed/{{dbset}}/data.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam domainbed-from-corpus --corpus {params.corpus:q} --out {params.out:q} > {log:q} 2>&1"


rule domainbed_features:
    input:
        data=lambda wildcards: PLAN.dg_data_marker(wildcards.dbset),
        weights=lambda wildcards: PLAN.teacher_weights(wildcards.teacher),
    output:
        features=f"{RESULTS}/domainbed/{{dbset}}/{{teacher}}/features.safetensors",
        facts=f"{RESULTS}/domainbed/{{dbset}}/{{teacher}}/features.json",
    params:
        teacher=lambda wildcards: PLAN.teacher_dir(wildcards.teacher),
        settings=lambda wildcards: as_json(job_settings.domainbed(PLAN, wildcards.dbset)),
    log:
        f"{LOGS}/domainbed/{{dbset}}/{{teacher}}/features.log",
    threads: lambda wildcards: DOMAINBED["workers"] + 1
    resources:
        **stage_resources("evaluate", gpu=DOMAINBED["gpus"]),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam domainbed-features --teacher {params.teacher:q} --settings {params.settings:q}"
        " --out {output.features:q} > {log:q} 2>&1"


rule domainbed_clip:
    input:
        features=rules.domainbed_features.output.features,
        facts=rules.domainbed_features.output.facts,
    output:
        f"{RESULTS}/domainbed/{{dbset}}/{{teacher}}/clip.json",
    params:
        settings=lambda wildcards: as_json(job_settings.domainbed(PLAN, wildcards.dbset)),
    log:
        f"{LOGS}/domainbed/{{dbset}}/{{teacher}}/clip.log",
    threads: lambda wildcards: DOMAINBED["workers"] + 1  # scikit-learn's L-BFGS runs on BLAS threads
    resources:
        **stage_resources("evaluate"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam domainbed-clip --features {input.features:q} --settings {params.settings:q}"
        " --out {output:q} > {log:q} 2>&1"


rule vl2v:
    input:
        features=rules.domainbed_features.output.features,
        facts=rules.domainbed_features.output.facts,
    output:
        result=f"{RESULTS}/domainbed/{{dbset}}/{{teacher}}/vl2v-{{variant}}/{{target}}.json",
        weights=f"{RESULTS}/domainbed/{{dbset}}/{{teacher}}/vl2v-{{variant}}/{{target}}.safetensors",
    params:
        settings=lambda wildcards: as_json(job_settings.domainbed(PLAN, wildcards.dbset)),
        target=lambda wildcards: {targets.domain_slug(d): d for d in PLAN.dg_domains(wildcards.dbset)}[wildcards.target],
    log:
        f"{LOGS}/domainbed/{{dbset}}/{{teacher}}/vl2v-{{variant}}/{{target}}.log",
    threads: lambda wildcards: DOMAINBED["workers"] + 1
    resources:
        **stage_resources("distill", gpu=DOMAINBED["gpus"]),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam vl2v --features {input.features:q} --settings {params.settings:q} --variant {wildcards.variant}"
        " --target {params.target:q} --out {output.result:q} --weights {output.weights:q} > {log:q} 2>&1"


rule domainbed_table:
    input:
        clip=targets.dg_clip_results(PLAN),
        vl2v=targets.dg_vl2v_results(PLAN),
        published=PLAN.repo_file("data", "vl2v_published.csv"),
    output:
        csv=report(f"{RESULTS}/tables/domainbed.csv", caption="../report/domainbed.rst", category="Tables"),
        md=f"{RESULTS}/tables/domainbed.md",
        effect=f"{RESULTS}/tables/domainbed_effect.csv",
    params:
        settings=as_json(job_settings.domainbed_table(PLAN)),
    log:
        f"{LOGS}/tables/domainbed.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam domainbed-table --clip {input.clip:q} --vl2v {input.vl2v:q} --published {input.published:q}"
        " --settings {params.settings:q} --csv {output.csv:q} --md {output.md:q} --effect {output.effect:q}"
        " > {log:q} 2>&1"


rule domainbed:
    input:
        targets.dg_targets(PLAN),
    localrule: True
