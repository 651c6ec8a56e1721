"""GPU-hours of the paper config, estimated from FLOPs measured on CPU with the real architectures.

For every stage of ``config/config.yaml``'s ``all`` (every run the eight tables and the DomainBed stage need):

* **FLOPs per unit of work**, counted with ``torch.utils.flop_counter``'s per-operator formulas on the real
  modules (the paper's LDM from ``models/architectures/ldm-text2im-large-256``, open_clip's ViT-B-16 / RN50
  wrapped in this project's own training objectives, timm's ResNet-50) on the meta device: exact shapes, no
  memory;
* **activation memory per sample**: for inference, measured -- the peak RSS the LDM's components add on the
  CPU at two batch sizes, one subprocess per case; for training, the bytes autograd saves for the backward
  pass, counted on the meta device (checked against the CPU's peak RSS for one case). ``--no-memory`` skips
  both;
* **work** from the config: synthetic images per set, samples per training, evaluated images, steps;
* **GPU-hours** = FLOPs / (peak x utilisation) on A100 and H100, and whether a job's batch fits in 40 / 80 GB:
  weights (+ gradients and AdamW state when training) + batch x activations per sample (halved in fp16/AMP).

It is an estimate from FLOPs. With a GPU, replace the augmentation row by measured throughput: T synthetic
images/s from ``python benchmarks/augment_throughput.py --ldm DIR --device cuda --precision fp16 --resolution 256
--realistic`` gives images / (3600 T) GPU-hours.

    python benchmarks/cost_model.py [--config config/config.yaml] [--utilisation 0.4] [--no-memory] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Peak dense fp16/bf16 tensor-core throughput (NVIDIA datasheets, SXM parts, no sparsity).
GPUS = {"A100": 312e12, "H100": 989e12}
ALIVE = 0.7  # share of CC3M / CC12M / LAION-400M URLs that still download (README: ~60-80%)
# Evaluation set sizes (ImageNet-1k train / val; the clip_benchmark test splits of Table 7's benchmarks).
IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000
TEST_IMAGES = {"imagenet1k": 50_000, "stl10": 8_000, "country211": 21_100, "caltech101": 6_084,
               "flowers": 6_149, "pets": 3_669, "sun397": 21_750}
CLASSES = {"imagenet1k": 1000, "stl10": 10, "country211": 211, "caltech101": 102, "flowers": 102, "pets": 37,
           "sun397": 397}
TEMPLATES = {"imagenet1k": 80, "stl10": 2, "country211": 5, "caltech101": 34, "flowers": 1, "pets": 1, "sun397": 2}
DOMAINBED_IMAGES = {"pacs": 9_991, "vlcs": 10_729, "officehome": 15_588, "terraincognita": 24_788,
                    "domainnet": 586_575}
ARCHITECTURE = "ldm-text2im-large-256"
GB = 1e9


# ------------------------------------------------------------------------------------------ models
def ldm_component(name: str):
    from edsam.ldm.architecture import _build_model, _component_class, architecture_dir

    source = architecture_dir(ARCHITECTURE)
    index = json.loads((source / "model_index.json").read_text())
    return _build_model(_component_class(*index[name]), source / name)


def clip_model(name: str, masking: float | None = None):
    import open_clip

    kwargs = {"force_patch_dropout": masking} if masking else {}
    device = torch.get_default_device()  # meta while counting FLOPs
    return open_clip.create_model(name, device=device, output_dict=True, **kwargs)  # as open_clip_train makes it


def variant(model, method: str, regulariser: str, train: dict):
    from edsam.train.objectives import AdaSettings, AdvStyleSettings, SlipSettings, VariantCLIP

    perturbation = regulariser if regulariser in ("ada", "advstyle") else None
    slip = SlipSettings(**{k: v for k, v in train["slip"].items()}) if method == "slip" else None
    return VariantCLIP(model, perturbation, AdaSettings(**train["ada"]), AdvStyleSettings(**train["advstyle"]), slip)


def image_size(model) -> int:
    size = model.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else size


# ------------------------------------------------------------------------------------------ work units
def ldm_ops(batch: int, training: bool = False, checkpointing: bool = True):
    """Closures running each LDM component on ``batch`` samples (forward, or forward + backward as
    edsam.ldm.train's step runs them: UNet with gradient checkpointing)."""
    def unet(model):
        latents = torch.randn(batch, 4, 32, 32, requires_grad=False)
        text = torch.randn(batch, 77, 1280)
        if training and checkpointing:
            model.enable_gradient_checkpointing()
        out = model(latents, torch.full((batch,), 500), encoder_hidden_states=text).sample
        if training:
            out.float().pow(2).mean().backward()

    def bert(model):
        out = model(torch.zeros(batch, 77, dtype=torch.long))[0]
        if training:
            out.float().pow(2).mean().backward()

    def vae_encode(model):
        model.encode(torch.randn(batch, 3, 256, 256)).latent_dist.mean.sum()

    def vae_decode(model):
        model.decode(torch.randn(batch, 4, 32, 32)).sample.sum()

    return {"unet": ("unet", unet), "bert": ("bert", bert), "vae_encode": ("vqvae", vae_encode),
            "vae_decode": ("vqvae", vae_decode)}


def clip_train_step(model_name: str, method: str, regulariser: str, train: dict, batch: int):
    """A training step of one table variant through the project's objectives (edsam.train.objectives)."""
    def build():
        masking = train["masking_ratio"] if regulariser == "masking" else None
        model = clip_model(model_name, masking)
        return variant(model, method, regulariser, train).train()

    def run(wrapped):
        size = image_size(wrapped.clip)
        views = 3 if method == "slip" else None  # the CLIP view and two SimCLR views (edsam.train.views)
        shape = (batch, views, 3, size, size) if views else (batch, 3, size, size)
        texts = torch.zeros(batch, wrapped.clip.context_length, dtype=torch.long)
        out = wrapped(torch.randn(shape), texts)
        # the loss terms are a few matrix products of the features: what costs is the towers' forward/backward
        sum(v.float().sum() for v in out.values() if torch.is_tensor(v) and v.requires_grad).backward()

    return build, run


def clip_inference(model_name: str, batch: int, tower: str):
    def build():
        return clip_model(model_name).eval()

    def run(model):
        with torch.no_grad():
            if tower == "image":
                size = image_size(model)
                model.encode_image(torch.randn(batch, 3, size, size))
            else:
                model.encode_text(torch.zeros(batch, model.context_length, dtype=torch.long))

    return build, run


def image_tower_train(model_name: str, batch: int):
    """Fine-tuning (edsam.evaluate.finetune): the image tower and a linear head, trained end to end."""
    def build():
        return clip_model(model_name).visual.train()

    def run(visual):
        size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
        visual(torch.randn(batch, 3, size, size)).float().sum().backward()

    return build, run


def student_train(student: str, batch: int, size: int):
    def build():
        import timm

        return timm.create_model(student, pretrained=False, num_classes=0).train()

    def run(model):
        model(torch.randn(batch, 3, size, size)).float().sum().backward()

    return build, run


def cases(config: dict, for_memory: bool = False) -> dict:
    """Every unit of work: name -> function(batch) -> (build, run). ``for_memory``: ADA with one inner step (its
    ascent frees each step's activations before the next, so one step peaks as high as fifteen)."""
    train = config["train"]
    if for_memory:
        train = {**train, "ada": {**train["ada"], "steps": 1}}
    out = {}
    for part in ldm_ops(1):
        out[f"ldm.{part}"] = lambda b, p=part: _ldm_case(p, b, False)
    for part in ("unet", "bert"):  # the Retrained-LDM's trainables (the autoencoder stays frozen)
        out[f"ldm.{part}.train"] = lambda b, p=part: _ldm_case(p, b, True)
    for key, model in train["models"].items():
        for method in ("clip", "slip"):
            for regulariser in ("none", "masking", "ada", "advstyle"):
                if regulariser == "masking" and "RN" in model:
                    continue
                out[f"train.{key}.{method}-{regulariser}"] = (
                    lambda b, m=model, me=method, r=regulariser: clip_train_step(m, me, r, train, b))
        out[f"eval.{key}.image"] = lambda b, m=model: clip_inference(m, b, "image")
        out[f"eval.{key}.text"] = lambda b, m=model: clip_inference(m, b, "text")
        out[f"finetune.{key}"] = lambda b, m=model: image_tower_train(m, b)
    vl2v = config["domainbed"]["vl2v"]
    out["domainbed.student"] = lambda b: student_train(vl2v["student"], b, vl2v["image_size"])
    return out


def _ldm_case(part: str, batch: int, training: bool):
    component, op = ldm_ops(batch, training)[part]

    def build():
        module = ldm_component(component)
        return module.train() if training else module.eval()

    def run(module):
        if training:
            op(module)
        else:
            with torch.no_grad():
                op(module)

    return build, run


# ------------------------------------------------------------------------------------------ measurements
class FlopCount(TorchDispatchMode):
    """torch.utils.flop_counter's per-operator FLOP formulas, summed over every dispatched operator.

    FlopCounterMode itself also tracks modules with backward hooks, which torch.autograd.grad (ADA's and
    AdvStyle's inner ascent) does not support; the formulas are the same."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(case, batch: int = 2) -> tuple[float, int]:
    """(FLOPs per sample, parameters) of a case on the meta device."""
    build, run = case(batch)
    with torch.device("meta"):
        module = build()
        with FlopCount() as counter:
            run(module)
    return counter.total / batch, sum(p.numel() for p in module.parameters())


def saved_bytes(case, batches=(2, 4)) -> float:
    """Training activations per sample: the bytes autograd saves for the backward pass (parameters excluded),
    counted on the meta device through saved-tensor hooks, between two batch sizes. For the UNet, trained with
    gradient checkpointing, that is what is kept between its blocks; recomputing one block in the backward pass
    briefly adds that block's activations."""
    totals = []
    for batch in batches:
        build, run = case(batch)
        seen = {}
        with torch.device("meta"):
            module = build()
            parameters = {p.untyped_storage()._cdata for p in module.parameters()}

            def pack(tensor):
                storage = tensor.untyped_storage()
                if storage._cdata not in parameters:
                    seen[storage._cdata] = storage.nbytes()
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                run(module)
        totals.append(sum(seen.values()))
    return (totals[1] - totals[0]) / (batches[1] - batches[0])


def _status(field: str) -> int:
    """A /proc/self/status memory figure in bytes (VmRSS: now, VmHWM: the peak since the last reset)."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024


def peak_rss_child(name: str, batches: list[int], config_path: str) -> None:
    """Run in a subprocess: the memory each batch size's run adds to what the process held before it (the peak
    RSS, reset before each run through /proc/self/clear_refs, minus the RSS then)."""
    import ctypes
    import gc

    config = load(config_path)
    torch.manual_seed(0)
    build, _ = cases(config, for_memory=True)[name](batches[0])
    module = build()
    added = []
    for batch in batches:
        _, run = cases(config, for_memory=True)[name](batch)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the next run's peak is its own
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        run(module)
        added.append(_status("VmHWM") - before)
        module.zero_grad(set_to_none=True)
    print(json.dumps({"added": added, "batches": batches}))


def activation_bytes(name: str, config_path: str, batches=(1, 2, 4)) -> float:
    """Measured activation memory per sample on the CPU: how much more a run of the largest batch adds than
    one of the next largest (batch-independent allocations cancel), per sample. glibc's mmap threshold is
    pinned so that freed tensors go back to the system instead of feeding the next run."""
    env = {"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin", "NO_ALBUMENTATIONS_UPDATE": "1",
           "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run([sys.executable, __file__, "--config", config_path, "--child", name,
                             "--batches", *map(str, batches)], capture_output=True, text=True, check=True, env=env)
    added = json.loads(result.stdout.strip().splitlines()[-1])["added"]
    return max(added[2] - added[1], 0) / (batches[2] - batches[1])


# ------------------------------------------------------------------------------------------ the paper config's work
def load(path: str) -> dict:
    from edsam.config import load_config

    return load_config(path)


def table_runs(config: dict) -> tuple[set, set]:
    """(train runs, extra zero-shot (run, benchmark) pairs) the eight tables and `all` ask for; a run is
    (dataset, model, method-regulariser, data, seed): each seed is a training of its own."""
    from edsam.layout import RunId
    from edsam.report.tables import ReportMapping, load_paper_values, required_results

    paper = load_paper_values(REPO / "data" / "paper_values.csv")
    mapping = ReportMapping.from_config(config)
    runs, extra = set(), set()
    primary = config["evaluate"]["primary"]
    for table in range(1, 9):
        for path in required_results(paper, table, mapping):
            # <results>/eval/<dataset>/<model>/<method-reg>/<data>/seed<N>/<benchmark>/<task>.json
            parts = Path(path).parts[-8:]
            run, benchmark = parts[1:6], parts[6]
            runs.add(run)
            if benchmark != primary:
                extra.add((run, benchmark))
    for dataset in config["datasets"]:  # all_targets: CLIP and ED-SAM per dataset, default model
        variant_name = f"{config['augment']['transform']}-rho{config['augment']['rho']}-m{config['augment']['m']}"
        for data in ("real", f"pretrained-{variant_name}"):
            runs.add((dataset, config["train"]["default_model"], "clip-none", data, f"seed{config['seed']}"))
    for teacher in config["domainbed"]["teachers"].values():
        if "run" in teacher:  # with or without /seed<N>, as the workflow reads it
            runs.add(tuple(str(RunId.parse(teacher["run"], config["seed"])).split("/")))
    return runs, extra


def synthetic_sets(config: dict, runs: set) -> set:
    """(dataset, ldm, transform, rho, M) of every set generated (Table 2's M < M' sets are copies of M')."""
    from edsam.report.tables import load_paper_values

    augment = config["augment"]
    paper = load_paper_values(REPO / "data" / "paper_values.csv")
    sweep = {config["report"]["datasets"].get(d) for d in paper.query("table == 2").dataset.unique()}
    sets = set()
    for dataset, _, _, data, _ in runs:
        match = re.fullmatch(r"(pretrained|retrained)-(edsam|random)-rho([\d.]+)-m(\d+)", data)
        if not match:
            continue
        ldm, transform, rho, m = match[1], match[2], float(match[3]), int(match[4])
        superset = augment["m_superset"]
        if (superset and m < superset and ldm == "pretrained" and transform == augment["transform"]
                and rho == float(augment["rho"]) and dataset in sweep):
            m = superset
        sets.add((dataset, ldm, transform, rho, m))
    return sets


def real_images(config: dict, dataset: str) -> float:
    return config["datasets"][dataset]["expected_samples"] * ALIVE


def work(config: dict, flops: dict) -> dict:
    """Stage -> list of jobs {what, flops}; flops is the per-sample table from count_flops."""
    augment, train, evaluate = config["augment"], config["train"], config["evaluate"]
    steps, guided = augment["ddim_steps"], 2 if augment["guidance_scale"] != 1 else 1
    per_real = flops["ldm.bert"] + flops["ldm.vae_encode"] + steps * flops["ldm.unet"]  # inversion: unguided
    per_synthetic = guided * steps * flops["ldm.unet"] + flops["ldm.vae_decode"]
    runs, extra = table_runs(config)
    stages = defaultdict(list)
    images_made = Counter()
    for dataset, ldm, transform, rho, m in sorted(synthetic_sets(config, runs)):
        n = real_images(config, dataset)
        images_made[dataset] += n * m
        stages["augment"].append({"what": f"{dataset} {ldm}-{transform}-rho{rho:g}-m{m}", "units": n * m,
                                  "flops": n * (per_real + m * per_synthetic)})
    retrain = config["ldm"]["retrain"]
    text_passes = 3 if retrain["train_text_encoder"] else 1
    unet_passes = 4 if retrain["gradient_checkpointing"] else 3
    per_step_sample = flops["ldm.vae_encode"] + text_passes * flops["ldm.bert"] + unet_passes * flops["ldm.unet"]
    for dataset in sorted({s[0] for s in synthetic_sets(config, runs) if s[1] == "retrained"}):
        samples = retrain["steps"] * retrain["batch_size"]
        stages["ldm"].append({"what": f"Retrained-LDM {dataset}", "units": samples, "flops": samples * per_step_sample})
    budget_samples = train.get("budget", "epochs") == "samples"
    for dataset, model, method_reg, data, seed in sorted(runs):
        method, regulariser = method_reg.split("-")
        key = f"train.{model}.{'slip' if method == 'slip' else 'clip'}-{regulariser}"
        ratio = 0 if data == "real" or budget_samples else train["synthetic_ratio"]
        samples = train["epochs"] * real_images(config, dataset) * (1 + ratio)
        stages["train"].append({"what": f"{dataset}/{model}/{method_reg}/{data}/{seed}", "units": samples,
                                "flops": samples * flops[key]})
        image, text = flops[f"eval.{model}.image"], flops[f"eval.{model}.text"]
        prompts = CLASSES["imagenet1k"] * TEMPLATES["imagenet1k"]
        finetune = evaluate["finetune"]["epochs"] * IMAGENET_TRAIN * flops[f"finetune.{model}"]
        eval_flops = (IMAGENET_VAL * image + prompts * text  # zero-shot
                      + (IMAGENET_TRAIN + IMAGENET_VAL) * image  # linear probe features
                      + finetune + IMAGENET_VAL * image + prompts * text)  # fine-tuning (head from zero-shot)
        stages["evaluate"].append({"what": f"{dataset}/{model}/{method_reg}/{data}/{seed}", "units": 1,
                                   "flops": eval_flops})
    for (dataset, model, method_reg, data, seed), benchmark in sorted(extra):
        flops_extra = (TEST_IMAGES[benchmark] * flops[f"eval.{model}.image"]
                       + CLASSES[benchmark] * TEMPLATES[benchmark] * flops[f"eval.{model}.text"])
        stages["evaluate"].append({"what": f"{dataset}/{model}/{method_reg}/{data}/{seed} {benchmark}", "units": 1,
                                   "flops": flops_extra})
    domainbed = config["domainbed"]
    teacher_model = config["train"]["default_model"]
    for name, spec in domainbed["datasets"].items():
        domains = len(spec["domains"])
        images = DOMAINBED_IMAGES.get(spec.get("report_as") or name, 0)
        for teacher in domainbed["teachers"]:
            stages["domainbed"].append({"what": f"{name} {teacher} embeddings", "units": images,
                                        "flops": images * flops[f"eval.{teacher_model}.image"]})
            vl2v = domainbed["vl2v"]
            steps_total = spec.get("align_steps", vl2v["align_steps"]) + spec.get("distill_steps", vl2v["distill_steps"])
            samples = steps_total * vl2v["batch_per_domain"] * (domains - 1)
            per = flops["domainbed.student"] + flops[f"eval.{teacher_model}.image"]  # teacher on the augmented batch
            jobs = len(vl2v["variants"]) * domains
            stages["domainbed"].append({"what": f"{name} {teacher} VL2V x{jobs}", "units": samples * jobs,
                                        "flops": jobs * samples * per})
    return dict(stages), images_made


# ------------------------------------------------------------------------------------------ memory at paper batch
def memory(config: dict, params: dict, act: dict) -> dict:
    """Peak GPU memory of each stage's job at the paper config's batch sizes (GB)."""
    augment, train, evaluate = config["augment"], config["train"], config["evaluate"]
    half = 0.5  # fp16 / AMP activations against the fp32 ones measured on the CPU
    ldm_params = params["ldm.unet"] + params["ldm.bert"] + params["ldm.vae_decode"]
    m_max = max(augment["m"], augment["m_superset"] or 0)
    b = augment["batch_size"]
    # the sampler decodes B latents at a time (edsam.augment.sampler); the UNet sees all B*M at once
    phases = {"invert": b * act["ldm.unet"], "sample": b * m_max * act["ldm.unet"],
              "decode": b * act["ldm.vae_decode"], "encode": b * act["ldm.vae_encode"]}
    out = {"augment": {"job": f"batch {b} real -> UNet batch {b * m_max} (M = {m_max}), fp16",
                       "gb": (2 * ldm_params + half * max(phases.values())) / GB,
                       "worst": max(phases, key=phases.get)}}
    retrain = config["ldm"]["retrain"]
    trainable = params["ldm.unet"] + (params["ldm.bert"] if retrain["train_text_encoder"] else 0)
    micro = retrain["micro_batch_size"] or retrain["batch_size"]
    per = act["ldm.unet.train"] + act["ldm.vae_encode"] + (act["ldm.bert.train"] if retrain["train_text_encoder"]
                                                             else act["ldm.bert"])
    out["ldm"] = {"job": f"micro-batch {micro}, fp32, AdamW",  # all weights fp32, + gradients and AdamW state
                  "gb": (4 * ldm_params + 12 * trainable + micro * per) / GB}
    for name in (k for k in act if k.startswith("train.")):
        out[name.removeprefix("train.")] = {"job": f"batch {train['batch_size']} per GPU, AMP, AdamW",
                                            "gb": (16 * params[name] + half * train["batch_size"] * act[name]) / GB}
    for key in train["models"]:
        out[f"finetune {key}"] = {"job": f"fine-tuning batch {evaluate['finetune']['batch_size']}, fp32, AdamW",
                                  "gb": (16 * params[f"finetune.{key}"]
                                         + evaluate["finetune"]["batch_size"] * act[f"finetune.{key}"]) / GB}
    vl2v = config["domainbed"]["vl2v"]
    domains = max((len(s["domains"]) for s in config["domainbed"]["datasets"].values()), default=2)
    batch = vl2v["batch_per_domain"] * (domains - 1)
    out["domainbed"] = {"job": f"student batch {batch} ({domains - 1} domains x {vl2v['batch_per_domain']})",
                        "gb": (16 * params["domainbed.student"] + batch * act["domainbed.student"]) / GB}
    return out


# ------------------------------------------------------------------------------------------ report
def measured_activations(names: list[str], config_path: str, cache: str | None, batches=(1, 2, 4)) -> dict:
    """activation_bytes for every name, kept in ``cache`` (JSON) as they come: one case takes minutes on a CPU."""
    known = json.loads(Path(cache).read_text()) if cache and Path(cache).exists() else {}
    for name in names:
        if name not in known:
            known[name] = activation_bytes(name, config_path, batches)
            if cache:
                Path(cache).write_text(json.dumps(known, indent=1))
    return {name: known[name] for name in names}


def report(config_path: str, utilisation: float, measure_memory: bool, cache: str | None = None) -> dict:
    config = load(config_path)
    started = time.time()
    table = cases(config)
    flops, params = {}, {}
    for name, case in table.items():
        flops[name], params[name] = count_flops(case)
    stages, images_made = work(config, flops)
    act, check = {}, {}
    if measure_memory:
        act = measured_activations(["ldm.unet", "ldm.vae_decode", "ldm.vae_encode", "ldm.bert"], config_path, cache)
        training = ["ldm.unet.train", "ldm.bert.train", "domainbed.student"]
        training += [k for k in table if k.startswith(("train.", "finetune."))]
        memory_cases = cases(config, for_memory=True)
        act.update({name: saved_bytes(memory_cases[name]) for name in training})
        # the saved-tensor count beside the CPU's peak RSS for one training case
        name = f"train.{config['train']['default_model']}.clip-none"
        check = {"case": name, "saved_tensors": act[name],
                 "peak_rss": measured_activations([name], config_path, cache, batches=(4, 8, 16))[name]}
    rows = []
    for stage, jobs in list(stages.items()) + [("all", [j for js in stages.values() for j in js])]:
        total = sum(j["flops"] for j in jobs)
        rows.append({"stage": stage, "jobs": len(jobs), "flops": total,
                     **{f"{gpu}_hours": total / (peak * utilisation) / 3600 for gpu, peak in GPUS.items()}})
    return {"config": config_path, "utilisation": utilisation, "peak_flops": GPUS, "alive_fraction": ALIVE,
            "per_sample_flops": flops, "parameters": params, "activation_bytes_per_sample": act,
            "stages": rows, "jobs": stages, "synthetic_images": dict(images_made), "memory_check": check,
            "paper_check": paper_check(config, flops, utilisation),
            "memory": memory(config, params, act) if act else {}, "seconds": round(time.time() - started, 1)}


PAPER_IMAGES, PAPER_HOURS, PAPER_GPUS = 12e6, 7.5, 32  # "~7.5 hours to generate 12M adversarial samples of CC12M on 32 GPUs"


def paper_check(config: dict, flops: dict, utilisation: float) -> list[dict]:
    """Synthetic images/s per A100 the estimate gives against the paper's own figure, at the config's M and at
    M = 1, with the utilisation the paper's figure implies."""
    steps = config["augment"]["ddim_steps"]
    paper_rate = PAPER_IMAGES / (PAPER_HOURS * 3600 * PAPER_GPUS)
    rows = []
    for m in sorted({config["augment"]["m"], 1}, reverse=True):
        per_image = ((flops["ldm.bert"] + flops["ldm.vae_encode"] + steps * flops["ldm.unet"]) / m
                     + steps * flops["ldm.unet"] + flops["ldm.vae_decode"])
        rows.append({"m": m, "flops_per_image": per_image, "paper_rate": paper_rate,
                     "estimate_rate": GPUS["A100"] * utilisation / per_image,
                     "implied_utilisation": paper_rate * per_image / GPUS["A100"]})
    return rows


def print_report(result: dict) -> None:
    flops, params, act = result["per_sample_flops"], result["parameters"], result["activation_bytes_per_sample"]
    print(f"# cost model: {result['config']}, utilisation {result['utilisation']:.0%} of peak "
          f"(A100 {GPUS['A100'] / 1e12:.0f}, H100 {GPUS['H100'] / 1e12:.0f} TFLOPS dense fp16/bf16), "
          f"{ALIVE:.0%} of URLs alive\n")
    print("| unit of work | parameters | GFLOPs per sample | activations per sample (fp32) |")
    print("| --- | --- | --- | --- |")
    for name in flops:
        memory = f"{act[name] / 1e6:,.0f} MB" if name in act else "-"
        print(f"| {name} | {params[name] / 1e6:,.1f} M | {flops[name] / 1e9:,.1f} | {memory} |")
    print("\n| stage | jobs | total FLOPs | A100-hours | H100-hours |")
    print("| --- | --- | --- | --- | --- |")
    for row in result["stages"]:
        print(f"| {row['stage']} | {row['jobs']} | {row['flops']:.2e} | {row['A100_hours']:,.0f} | "
              f"{row['H100_hours']:,.0f} |")
    if result["memory"]:
        print("\n| job | at the paper config's batch | peak memory | fits 40 GB | fits 80 GB |")
        print("| --- | --- | --- | --- | --- |")
        for name, row in result["memory"].items():
            gb = row["gb"]
            print(f"| {name} | {row['job']} | {gb:,.1f} GB | {'yes' if gb <= 40 else 'no'} | "
                  f"{'yes' if gb <= 80 else 'no'} |")
    if result["memory_check"]:
        check = result["memory_check"]
        print(f"\nactivations per sample, {check['case']}: {check['saved_tensors'] / 1e6:,.0f} MB saved for the "
              f"backward pass (meta device) against {check['peak_rss'] / 1e6:,.0f} MB of peak RSS growth (CPU)")
    print(f"\nthe paper: {PAPER_IMAGES / 1e6:.0f}M synthetic images in {PAPER_HOURS} h on {PAPER_GPUS} A100 = "
          f"{result['paper_check'][0]['paper_rate']:.1f} images/s per GPU")
    for row in result["paper_check"]:
        print(f"  at M = {row['m']}: {row['flops_per_image'] / 1e12:.2f} TFLOPs per synthetic image -> estimate "
              f"{row['estimate_rate']:.1f} images/s per A100 ({row['estimate_rate'] / row['paper_rate']:.1f}x the "
              f"paper's); the paper's figure implies {row['implied_utilisation']:.0%} utilisation")
    print(f"\nsynthetic images: { {k: f'{v:.3g}' for k, v in result['synthetic_images'].items()} }; "
          f"{result['seconds']} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--utilisation", type=float, default=0.4, help="achieved share of peak FLOPS")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory measurements")
    parser.add_argument("--json", help="also write the full result here")
    parser.add_argument("--memory-cache", help="JSON file keeping measured activations between runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        peak_rss_child(args.child, args.batches, args.config)
        return 0
    result = report(args.config, args.utilisation, not args.no_memory, args.memory_cache)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
