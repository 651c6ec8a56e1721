# Latent diffusion models: the embedded default's tiny LDM (trained once, its
# weights committed under models/), and Table 4's Retrained-LDM.
#
# Checkpoint folders are not declared outputs (a rerun would delete them);
# each training rule's output is the train.json written at the end.


rule ldm_pretrain_shards:
    output:
        manifest=f"{RESULTS}/ldm/pretrain-corpus/manifest.json",
    params:
        settings=lambda wildcards: as_json(
            {"corpus": config["corpus"], "pretrain": config["ldm"]["pretrain"]}
        ),
        out=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        f"{LOGS}/ldm/pretrain_shards.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam ldm-pretrain-shards --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


rule ldm_init:
    output:
        f"{RESULTS}/ldm/tiny/init/model_index.json",
    params:
        spec=lambda wildcards: as_json(config["ldm"]["tiny"]),
        seed=config["seed"],
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/ldm/init.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam ldm-init --spec {params.spec:q} --seed {params.seed} --out {params.out:q} > {log:q} 2>&1"


rule ldm_train_autoencoder:
    input:
        init=rules.ldm_init.output[0],
        manifest=rules.ldm_pretrain_shards.output.manifest,
    output:
        f"{RESULTS}/ldm/tiny/autoencoder/train.json",
    params:
        source=lambda wildcards, input: os.path.dirname(input.init),
        settings=lambda wildcards: as_json(job_settings.ldm_train(PLAN, "autoencoder")),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/ldm/train_autoencoder.log",
    threads: 2
    resources:
        **stage_resources("ldm", gpu=job_resources.model_gpu(PLAN)),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam ldm-train --source {params.source:q} --manifest {input.manifest:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


use rule ldm_train_autoencoder as ldm_train_diffusion with:
    input:
        init=rules.ldm_train_autoencoder.output[0],
        manifest=rules.ldm_pretrain_shards.output.manifest,
    output:
        f"{RESULTS}/ldm/tiny/diffusion/train.json",
    params:
        source=lambda wildcards, input: os.path.join(os.path.dirname(input.init), "pipeline"),
        settings=lambda wildcards: as_json(job_settings.ldm_train(PLAN, "diffusion")),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/ldm/train_diffusion.log",


rule ldm_release:
    """Regenerate the committed demo weights: snakemake ldm_release --forcerun ldm_release"""
    input:
        rules.ldm_train_diffusion.output[0],
    output:
        "models/tiny-ldm/SHA256SUMS",
    params:
        source=lambda wildcards, input: os.path.join(os.path.dirname(input[0]), "pipeline"),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/ldm/release.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam ldm-release --source {params.source:q} --out {params.out:q} > {log:q} 2>&1"


use rule ldm_train_autoencoder as ldm_retrain with:
    input:
        init=lambda wildcards: PLAN.pretrained_ldm_inputs(),
        manifest=lambda wildcards: manifest(wildcards.dataset),
    output:
        LAYOUT.retrained_ldm("{dataset}", "train.json"),
    params:
        source=lambda wildcards: PLAN.pretrained_ldm(),
        settings=lambda wildcards: as_json(job_settings.ldm_train(PLAN, "retrain")),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/ldm/retrain_{{dataset}}.log",
    threads: config["ldm"]["retrain"]["threads"]
    priority: 45  # the retrained-LDM synthetic sets wait for it


rule ldm_architecture:
    """A published pipeline architecture (models/architectures/<name>) with random weights: augment.ldm:
    architecture:<name> (the paper-scale rehearsal)."""
    input:
        lambda wildcards: os.path.join(workflow.basedir, "models", "architectures", wildcards.architecture,
                                       "model_index.json"),
    output:
        LAYOUT.architecture_ldm("{architecture}", "model_index.json"),
    params:
        source=lambda wildcards, input: os.path.dirname(input[0]),
        seed=config["seed"],
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/ldm/architecture_{{architecture}}.log",
    resources:
        **stage_resources("ldm"),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam ldm-build --architecture {params.source:q} --seed {params.seed} --out {params.out:q}"
        " > {log:q} 2>&1"


rule ldm_fidelity:
    input:
        ldm=lambda wildcards: PLAN.ldm_inputs(wildcards.ldm, DATASETS[0]),
    output:
        report=f"{RESULTS}/ldm/fidelity/{{ldm}}.json",
        grid=report(f"{RESULTS}/ldm/fidelity/{{ldm}}.png", caption="../report/ldm_grid.rst", category="LDM"),
    params:
        ldm=lambda wildcards: PLAN.ldm_source(wildcards.ldm, DATASETS[0]),
        settings=lambda wildcards: as_json(job_settings.fidelity(PLAN)),
    log:
        f"{LOGS}/ldm/fidelity_{{ldm}}.log",
    resources:
        **stage_resources("ldm", gpu=job_resources.model_gpu(PLAN)),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam ldm-fidelity --ldm {params.ldm:q} --settings {params.settings:q}"
        " --out {output.report:q} --grid {output.grid:q} > {log:q} 2>&1"
