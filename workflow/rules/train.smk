# CLIP training with open_clip_train (through edsam.train.entry, which plugs in
# the paper's variants). One job per run:
#   results/train/<dataset>/<model>/<method>-<regulariser>/<data>/
# method: clip | laclip | slip; regulariser: none | masking | ada | advstyle;
# data: real, or <ldm>-<transform>-rho<rho>-m<M> (that augmentation's shards mixed in).
# open_clip's logs and checkpoints (open_clip/) are deliberately not declared
# outputs: Snakemake would delete them before a rerun, and a killed run resumes
# from them (--resume latest).


rule laclip_rewrites:
    input:
        lambda wildcards: manifest(wildcards.dataset),
    output:
        LAYOUT.laclip("{dataset}", "rewrites.csv"),
    log:
        f"{LOGS}/laclip/{{dataset}}/rewrites.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam laclip-rewrites --manifest {input:q} --out {output:q} > {log:q} 2>&1"


rule laclip_index:
    input:
        rewrites_index_inputs,
    output:
        LAYOUT.laclip("{dataset}", "rewrites.sqlite"),
    params:
        rewrites=rewrites_csv,
        version=rewrites_version,
    log:
        f"{LOGS}/laclip/{{dataset}}/index.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam laclip-index --rewrites {params.rewrites:q} --out {output:q} > {log:q} 2>&1"


rule train_clip:
    input:
        unpack(lambda wildcards: targets.train_inputs(PLAN, run_id(wildcards))),
    output:
        weights=f"{RESULTS}/train/{TRAIN_RUN}/model/open_clip_model.safetensors",
        facts=f"{RESULTS}/train/{TRAIN_RUN}/train.json",
    params:
        run_dir=lambda wildcards: run_id(wildcards).train_dir(RESULTS),
        synthetic=lambda wildcards, input: ["--synthetic-manifest", input.synthetic] if input.synthetic else [],
        rewrites=lambda wildcards, input: ["--rewrites-index", input.rewrites] if "rewrites" in input.keys() else [],
        settings=lambda wildcards: as_json(job_settings.train(PLAN, run_id(wildcards))),
        gpus=config["train"]["gpus"],  # per node
        nodes=config["train"]["nodes"],
        checkpoints=[] if config["train"]["keep_checkpoints"] else ["--drop-checkpoints"],
    log:
        f"{LOGS}/train/{TRAIN_RUN}.log",
    # open_clip_train's --workers are per GPU process
    threads: lambda wildcards: max(1, config["train"]["gpus"]) * (config["train"]["workers"] + 1)
    priority: 30  # before evaluations: they wait on other trainings, tables on all of them
    resources:
        **job_resources.train(PLAN),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam train --real-manifest {input.real:q} {params.synthetic:q} {params.rewrites:q}"
        " --settings {params.settings:q} --gpus {params.gpus} --nodes {params.nodes} {params.checkpoints:q}"
        " --out {params.run_dir:q} --facts {output.facts:q} > {log:q} 2>&1"
