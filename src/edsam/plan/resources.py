"""Each job's resources, as the Snakemake SLURM executor plugin reads them (config ``resources``)."""

from __future__ import annotations

from edsam.plan import Plan


def stage(plan: Plan, stage: str, gpu: int = 0, nodes: int | None = None) -> dict:
    """A stage's job resources from config["resources"].

    runtime (minutes) is multiplied by the attempt, so a job killed at its time
    limit comes back with more (profiles/slurm sets retries). A GPU job gets
    tasks_per_gpu=0: the plugin would otherwise start one task per GPU, and
    each would run the whole job (torchrun starts the per-GPU processes itself).
    """
    cluster = plan.config["resources"]
    spec = cluster["stages"][stage]
    runtime = spec["runtime"]
    resources = {"runtime": lambda wildcards, attempt: runtime * attempt, "mem_mb": spec["mem_mb"]}
    chosen = {"slurm_partition": spec.get("slurm_partition") or cluster["slurm_partition"],
              "slurm_account": cluster["slurm_account"], "cpus_per_task": spec.get("cpus_per_task"),
              "nodes": nodes}
    if gpu:
        chosen.update(tasks_per_gpu=0, gpu_model=cluster["gpu_model"])
    return {**resources, "gpu": gpu, **{key: value for key, value in chosen.items() if value is not None}}


def train(plan: Plan) -> dict:
    """One node: a single task that starts torchrun on its G GPUs. N > 1 nodes: the slurm plugin's MPI mode,
    N x G tasks (--ntasks-per-node=G, one per GPU, each with its loader workers' CPUs) that the job's own
    `srun` starts (edsam.train.run.launch_command); `gpu` is the job's total."""
    train = plan.config["train"]
    gpus, nodes = train["gpus"], train["nodes"]
    resources = stage(plan, "train", gpu=gpus * nodes, nodes=nodes)
    if nodes > 1:
        resources.update(mpi="srun", tasks_per_node=max(gpus, 1), cpus_per_task=train["workers"] + 1)
    return resources


def model_gpu(plan: Plan) -> int:
    """GPUs of a one-process LDM job (augmentation, LDM training, fidelity): none when augment.device is cpu."""
    return 0 if plan.config["augment"]["device"] == "cpu" else 1
