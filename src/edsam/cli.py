"""Command-line entry points the Snakemake rules call (``python -m edsam <command>``).

Rules pass their settings as one JSON argument (quoted by Snakemake's ``:q``),
so no config or data string is ever spliced into a shell command. With
``--log FILE`` (before the command) everything the job prints goes to FILE,
and its error line, when it fails, also to the job's own stderr: Snakemake's
console for a local job, the job's cluster log on SLURM (which Snakemake's
``show-failed-logs`` prints with the rule's log).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path


def _cmd_corpus(args) -> int:
    from edsam.corpus import CorpusSpec, build_corpus

    summary = build_corpus(CorpusSpec.from_config(json.loads(args.settings)), args.out)
    print(json.dumps({k: summary[k] for k in ("images", "url_rows", "broken_rows")}))
    return 0


def _cmd_download(args) -> int:
    from edsam.download import DownloadError, DownloadSettings, download_dataset

    settings = json.loads(args.settings)
    try:
        manifest = download_dataset(
            DownloadSettings.from_config(args.dataset, settings["dataset"], settings["download"]), args.out
        )
    except DownloadError as err:
        return fail(args, err)
    print(
        f"{manifest['dataset']}: {manifest['samples']}/{manifest['rows']} samples "
        f"(success rate {manifest['success_rate']:.3f}) in {manifest['num_shards']} shards, "
        f"{manifest['download_seconds']:.1f} s"
    )
    return 0


def _cmd_verify_shards(args) -> int:
    from edsam.shards import ShardError, verify_shard_files

    try:
        results = verify_shard_files(args.tars, args.manifest, args.max_pixels, args.out)
    except ShardError as err:
        return fail(args, err)
    for result in results:
        print(json.dumps({k: result[k] for k in ("shard", "samples", "bad_images", "missing_captions")}))
    return 0


def _cmd_download_report(args) -> int:
    from edsam.shards import download_report

    frame = download_report(args.manifest, args.verified, args.out)
    print(frame.sum(numeric_only=True).to_string())
    return 0


def _cmd_ldm_pretrain_shards(args) -> int:
    from edsam.corpus import CorpusSpec, pack_shards_with_manifest

    settings = json.loads(args.settings)
    corpus, pretrain = settings["corpus"], settings["pretrain"]
    # short_caption_fraction 0: the captions the committed tiny LDM was trained on (a rerun makes the same data)
    spec = CorpusSpec(seed=pretrain["corpus_seed"], image_size=corpus["image_size"],
                      source_domain=corpus["source_domain"], train_per_class=pretrain["per_class"],
                      short_caption_fraction=0.0)
    manifest = pack_shards_with_manifest(spec, spec.source_domain, "train", args.out, "ldm-pretrain")
    print(f"{manifest['samples']} samples in {len(manifest['shards'])} shards")
    return 0


def _cmd_ldm_init(args) -> int:
    from edsam.ldm.models import TinyLDMSpec, build_tiny_pipeline, save_tiny_pipeline

    values = json.loads(args.spec)
    spec = TinyLDMSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    save_tiny_pipeline(build_tiny_pipeline(spec, Path(args.out).parent / "work", seed=args.seed), spec, args.out)
    return 0


def _cmd_ldm_build(args) -> int:
    from edsam.ldm.architecture import build_random_pipeline

    facts = build_random_pipeline(args.architecture, args.out, seed=args.seed, half=not args.fp32)
    print(json.dumps({k: facts[k] for k in ("pipeline", "parameters", "dtype")}))
    return 0


def _cmd_ldm_train(args) -> int:
    from edsam.download import shard_paths
    from edsam.ldm.train import LDMTrainSettings, train_ldm

    facts = train_ldm(args.source, shard_paths(args.manifest), args.out, LDMTrainSettings(**json.loads(args.settings)))
    print(json.dumps({k: facts[k] for k in ("final_step", "first_loss", "final_loss", "seconds_this_run")}))
    return 0


def _cmd_ldm_release(args) -> int:
    from edsam.ldm.pipeline import release_pipeline

    print(release_pipeline(args.source, args.out, half=not args.fp32))
    return 0


def _cmd_rehearsal_input(args) -> int:
    from edsam import rehearsal

    settings = json.loads(args.settings)
    sizes, seed = settings["rehearsal"], settings["seed"]
    if args.kind == "pairs":
        facts = rehearsal.write_pairs(settings["dataset"], sizes["pairs"], sizes["image_size"], seed, args.out)
    elif args.kind == "benchmark":
        facts = rehearsal.write_benchmark(settings["dataset"], sizes, seed, args.out)
    else:
        facts = rehearsal.write_domainbed_root(settings["domains"], settings["classes"], sizes, seed, args.out)
    print(json.dumps(facts))
    return 0


def _cmd_rehearsal_summary(args) -> int:
    from edsam.fileio import write_json_atomic
    from edsam.rehearsal import summarize

    summary = summarize(args.results)
    write_json_atomic(args.out, summary)
    print(json.dumps(summary["counts"]))
    return 0


def _cmd_augment(args) -> int:
    from edsam.augment.generate import AugmentSettings
    from edsam.augment.groups import augment_group
    from edsam.augment.sampler import SamplerSettings

    settings = json.loads(args.settings)
    device = None if settings["device"] == "auto" else settings["device"]
    group = augment_group(
        args.ldm, args.sources, args.out_dir, args.group, AugmentSettings(**settings["augment"]),
        SamplerSettings(**settings["sampler"]), local_files_only=settings["local_files_only"], device=device,
        precision=settings["precision"],
    )
    print(json.dumps({k: group[k] for k in ("real_samples", "synthetic_samples")}))
    return 0


def _cmd_augment_manifest(args) -> int:
    from edsam.augment.manifest import write_manifest

    manifest = write_manifest(args.groups, args.out)
    print(json.dumps({k: manifest[k] for k in ("real_samples", "synthetic_samples", "skipped")}))
    return 0


def _cmd_augment_subset(args) -> int:
    from edsam.augment.groups import subset_group

    group = subset_group(args.superset_group, args.out_dir, args.group, args.m)
    print(json.dumps({k: group[k] for k in ("real_samples", "synthetic_samples")}))
    return 0


def _cmd_ldm_fidelity(args) -> int:
    from edsam.augment.sampler import SamplerSettings
    from edsam.fileio import write_json_atomic
    from edsam.ldm.fidelity import evaluate_fidelity
    from edsam.ldm.pipeline import LatentDiffusion

    settings = json.loads(args.settings)
    ldm = LatentDiffusion.load(args.ldm, local_files_only=True)
    result = evaluate_fidelity(ldm, settings["corpus"], settings["fidelity"], SamplerSettings(**settings["sampler"]),
                               settings["seed"], args.grid)
    result["ldm"] = args.ldm
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_train(args) -> int:
    from edsam.train.run import TrainInputError, TrainSettings, train

    settings = json.loads(args.settings)
    try:
        facts = train(TrainSettings(**settings["train"]), args.real_manifest, args.synthetic_manifest, args.out,
                      args.facts, rewrites_index=args.rewrites_index, gpus=args.gpus, nodes=args.nodes,
                      provenance=settings.get("provenance"))
    except TrainInputError as err:
        return fail(args, err)
    if args.drop_checkpoints:
        from edsam.train.run import drop_checkpoints

        drop_checkpoints(args.out)
    print(json.dumps({k: facts[k] for k in ("epochs", "samples_seen", "first_epoch_loss", "final_loss")}))
    return 0


def _cmd_laclip_rewrites(args) -> int:
    from edsam.download import shard_paths
    from edsam.shards import iter_samples
    from edsam.train.captions import write_rewrites_csv

    def captions():
        for path in shard_paths(args.manifest):
            for sample in iter_samples(path):
                if sample.get("txt"):
                    yield sample["txt"].decode("utf-8", errors="replace")

    print(f"{write_rewrites_csv(captions(), Path(args.out))} captions rewritten")
    return 0


def _cmd_laclip_import(args) -> int:
    from edsam.train.captions import import_line_aligned

    print(f"{import_line_aligned(Path(args.captions), [Path(f) for f in args.rewrites], Path(args.out))} rows")
    return 0


def _cmd_laclip_index(args) -> int:
    from edsam.train.captions import build_index

    try:
        counts = build_index(Path(args.rewrites), Path(args.out))
    except (ValueError, OSError) as err:
        return fail(args, err)
    print(json.dumps(counts))
    return 0


def _cmd_benchmark_from_corpus(args) -> int:
    from edsam.evaluate.benchmarks import package_corpus_domain

    print(json.dumps(package_corpus_domain(args.corpus, args.domain, args.out)))
    return 0


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


def _cmd_table(args) -> int:
    from edsam.report.tables import ReportMapping, write_table

    frame = write_table(args.paper, args.table, ReportMapping.from_config(json.loads(args.mapping)), args.csv, args.md)
    print(frame.status.value_counts().to_string())
    return 0


def _cmd_headline(args) -> int:
    from edsam.report.headline import HeadlineSpec, write_headline

    spec = HeadlineSpec.from_config(json.loads(args.settings))
    if spec is None:
        print("edsam headline: error: report.headline is off (no dataset or seeds)", file=sys.stderr)
        return 1
    classes = [line for line in Path(args.classnames).read_text().splitlines() if line.strip()]
    frame = write_headline(spec, args.csv, args.md, args.figure, chance=1.0 / len(classes))
    print(frame.to_string())
    return 0


def _cmd_plot_versus(args) -> int:
    from edsam.report.plots import plot_versus

    plot_versus(args.table_csv, args.knob, args.out)
    return 0


def _cmd_plot_domains(args) -> int:
    from edsam.report.plots import plot_domains

    plot_domains(args.results, args.out)
    return 0


def _cmd_readme_results(args) -> int:
    from edsam.fileio import write_bytes_atomic
    from edsam.report.readme import results_block

    write_bytes_atomic(args.out, results_block(args.tables, args.figures, args.figures_dir, args.title,
                                                  args.markdown, args.headline).encode())
    return 0


def _cmd_readme_sync(args) -> int:
    from edsam.report.readme import sync_readme

    try:
        sync_readme(args.readme, args.block, args.figures, args.figures_dir)
    except (OSError, ValueError) as err:
        return fail(args, err)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edsam", description=__doc__)
    parser.add_argument("--log", help="write the job's output (its child processes' too) to this file; "
                                      "an error line also goes to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="generate the embedded demo corpus")
    corpus.add_argument("--settings", required=True, help="the config's corpus block, as JSON")
    corpus.add_argument("--out", required=True, help="output folder")
    corpus.set_defaults(func=_cmd_corpus)

    download = sub.add_parser("download", help="download one dataset with img2dataset")
    download.add_argument("--dataset", required=True, help="dataset name (a key of config.datasets)")
    download.add_argument("--settings", required=True, help='{"dataset": {...}, "download": {...}} as JSON')
    download.add_argument("--out", required=True, help="the dataset's download folder")
    download.set_defaults(func=_cmd_download)

    verify = sub.add_parser("verify-shards", help="read every sample of a group of downloaded shards")
    verify.add_argument("--tars", nargs="+", required=True)
    verify.add_argument("--manifest", required=True, help="the dataset's manifest.json")
    verify.add_argument("--max-pixels", type=int, required=True, help="refuse images larger than this")
    verify.add_argument("--out", required=True, help="where to write the group's JSON summary (one entry per shard)")
    verify.set_defaults(func=_cmd_verify_shards)

    report = sub.add_parser("download-report", help="per-shard TSV of a dataset's download")
    report.add_argument("--manifest", required=True)
    report.add_argument("--out", required=True)
    report.add_argument("verified", nargs="*", help="verify-shards outputs (one JSON per shard group)")
    report.set_defaults(func=_cmd_download_report)

    pretrain = sub.add_parser("ldm-pretrain-shards", help="render the tiny LDM's pretraining corpus as shards")
    pretrain.add_argument("--settings", required=True, help='{"corpus": {...}, "pretrain": {...}} as JSON')
    pretrain.add_argument("--out", required=True)
    pretrain.set_defaults(func=_cmd_ldm_pretrain_shards)

    init = sub.add_parser("ldm-init", help="a randomly initialised tiny LDM, saved as a diffusers pipeline")
    init.add_argument("--spec", required=True, help="the config's ldm.tiny block, as JSON")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--out", required=True)
    init.set_defaults(func=_cmd_ldm_init)

    build = sub.add_parser("ldm-build", help="a published pipeline architecture with random weights (diffusers folder)")
    build.add_argument("--architecture", required=True, help="a folder of component configs, or a name under "
                                                               "models/architectures/")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--fp32", action="store_true", help="write fp32 weights (default: fp16, half the size)")
    build.add_argument("--out", required=True)
    build.set_defaults(func=_cmd_ldm_build)

    train = sub.add_parser("ldm-train", help="train one stage of an LDM on the shards a manifest lists")
    train.add_argument("--source", required=True, help="the pipeline folder to start from")
    train.add_argument("--manifest", required=True, help="a manifest.json listing the training shards")
    train.add_argument("--settings", required=True, help="LDMTrainSettings as JSON")
    train.add_argument("--out", required=True)
    train.set_defaults(func=_cmd_ldm_train)

    release = sub.add_parser("ldm-release", help="copy a trained pipeline for committing, with SHA256SUMS")
    release.add_argument("--source", required=True)
    release.add_argument("--out", required=True)
    release.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    release.set_defaults(func=_cmd_ldm_release)

    stand_in = sub.add_parser("rehearsal-input", help="a generated stand-in input of the paper-scale rehearsal")
    stand_in.add_argument("--kind", required=True, choices=["pairs", "benchmark", "domainbed"])
    stand_in.add_argument("--settings", required=True, help="the entry's config, the rehearsal block and the seed")
    stand_in.add_argument("--out", required=True)
    stand_in.set_defaults(func=_cmd_rehearsal_input)

    summary = sub.add_parser("rehearsal-summary", help="what a rehearsal run built: tables, runs, LDMs, results")
    summary.add_argument("--results", required=True, help="the results_dir")
    summary.add_argument("--out", required=True)
    summary.set_defaults(func=_cmd_rehearsal_summary)

    augment = sub.add_parser("augment", help="ED-SAM: a group of source shards -> their synthetic shards")
    augment.add_argument("--ldm", required=True, help="pipeline folder or hub id")
    augment.add_argument("--sources", nargs="+", required=True, help="the real shards (.tar) of the group")
    augment.add_argument("--out-dir", required=True, help="the synthetic set: shards/<id>.tar, stats/<id>.json")
    augment.add_argument("--group", required=True, help="where to write the group's JSON (its shards' stats)")
    augment.add_argument("--settings", required=True, help="augment, sampler, device, precision as JSON")
    augment.set_defaults(func=_cmd_augment)

    augment_manifest = sub.add_parser("augment-manifest", help="list a synthetic shard set and its totals")
    augment_manifest.add_argument("--out", required=True)
    augment_manifest.add_argument("groups", nargs="+", help="the set's shard-group JSONs")
    augment_manifest.set_defaults(func=_cmd_augment_manifest)

    subset = sub.add_parser("augment-subset", help="the M = m synthetic shards as the first m samples of an M' > m set")
    subset.add_argument("--superset-group", required=True, help="the M' set's group JSON")
    subset.add_argument("--m", type=int, required=True)
    subset.add_argument("--out-dir", required=True, help="the M = m set")
    subset.add_argument("--group", required=True, help="where to write this group's JSON")
    subset.set_defaults(func=_cmd_augment_subset)

    fidelity = sub.add_parser("ldm-fidelity", help="judge an LDM's outputs with a classifier of real images")
    fidelity.add_argument("--ldm", required=True)
    fidelity.add_argument("--settings", required=True)
    fidelity.add_argument("--out", required=True)
    fidelity.add_argument("--grid", required=True, help="PNG: real | resampled | ED-SAM per rho | generated")
    fidelity.set_defaults(func=_cmd_ldm_fidelity)

    clip_train = sub.add_parser("train", help="train CLIP with open_clip_train on real (+ synthetic) shards")
    clip_train.add_argument("--real-manifest", required=True, help="the dataset's download manifest.json")
    clip_train.add_argument("--synthetic-manifest", help="an augmentation manifest.json to mix in")
    clip_train.add_argument("--rewrites-index", help="LaCLIP caption rewrite index (SQLite)")
    clip_train.add_argument("--settings", required=True, help='{"train": TrainSettings, "provenance": {...}}')
    clip_train.add_argument("--gpus", type=int, default=0, help="GPUs per node (0: CPU)")
    clip_train.add_argument("--nodes", type=int, default=1)
    clip_train.add_argument("--out", required=True, help="run folder (open_clip logs + exported model/)")
    clip_train.add_argument("--facts", required=True, help="where to write the run's facts JSON")
    clip_train.add_argument("--drop-checkpoints", action="store_true",
                            help="delete open_clip_train's checkpoints once the model is exported (train.keep_checkpoints)")
    clip_train.set_defaults(func=_cmd_train)

    rewrites = sub.add_parser("laclip-rewrites", help="caption rewrites by the deterministic rule (demo LaCLIP)")
    rewrites.add_argument("--manifest", required=True, help="the dataset's download manifest.json")
    rewrites.add_argument("--out", required=True, help="rewrite CSV")
    rewrites.set_defaults(func=_cmd_laclip_rewrites)

    importer = sub.add_parser("laclip-import", help="LaCLIP's line-aligned rewrite text files -> rewrite CSV")
    importer.add_argument("--captions", required=True, help="original captions, one per line")
    importer.add_argument("--out", required=True)
    importer.add_argument("rewrites", nargs="+", help="rewrite files, line-aligned with --captions")
    importer.set_defaults(func=_cmd_laclip_import)

    index = sub.add_parser("laclip-index", help="rewrite CSV -> SQLite index the trainer reads")
    index.add_argument("--rewrites", required=True)
    index.add_argument("--out", required=True)
    index.set_defaults(func=_cmd_laclip_index)

    bench = sub.add_parser("benchmark-from-corpus", help="a demo corpus domain in clip_benchmark's webdataset layout")
    bench.add_argument("--corpus", required=True, help="the corpus folder (metadata.parquet, images/)")
    bench.add_argument("--domain", required=True)
    bench.add_argument("--out", required=True)
    bench.set_defaults(func=_cmd_benchmark_from_corpus)

    evaluate = sub.add_parser("evaluate", help="zero-shot / linear probe (clip_benchmark) and fine-tuning of one checkpoint")
    evaluate.add_argument("--plan", required=True,
                          help='JSON list of {"task": zeroshot_classification|linear_probe|finetune, '
                               '"benchmark": clip_benchmark name (wds/...), "root": webdataset root, "out": result JSON}')
    evaluate.add_argument("--model-dir", required=True, help="an open_clip local-dir model folder")
    evaluate.add_argument("--train-facts", help="the run's train.json (provenance)")
    evaluate.add_argument("--settings", required=True)
    evaluate.set_defaults(func=_cmd_evaluate)

    table = sub.add_parser("table", help="one paper table: our results beside the published numbers")
    table.add_argument("--table", type=int, required=True, choices=range(1, 9))
    table.add_argument("--paper", required=True, help="data/paper_values.csv")
    table.add_argument("--mapping", required=True, help="the config's report block (+ augment rho/m, results_dir)")
    table.add_argument("--csv", required=True)
    table.add_argument("--md", required=True)
    table.set_defaults(func=_cmd_table)

    headline = sub.add_parser("headline", help="CLIP / Random / ED-SAM over seeds: table, paired differences, figure")
    headline.add_argument("--settings", required=True, help="report, augment, evaluate, train, seed, results_dir (JSON)")
    headline.add_argument("--classnames", required=True, help="the source benchmark's classnames.txt (chance line)")
    headline.add_argument("--csv", required=True)
    headline.add_argument("--md", required=True)
    headline.add_argument("--figure", required=True)
    headline.set_defaults(func=_cmd_headline)

    versus = sub.add_parser("plot-versus", help="accuracy against rho (Table 1) or M (Table 2)")
    versus.add_argument("--table-csv", required=True)
    versus.add_argument("--knob", required=True, choices=["rho", "m"])
    versus.add_argument("--out", required=True)
    versus.set_defaults(func=_cmd_plot_versus)

    domains = sub.add_parser("plot-domains", help="zero-shot accuracy per benchmark (domain), one bar per run")
    domains.add_argument("--out", required=True)
    domains.add_argument("results", nargs="+", help="zero-shot result JSONs")
    domains.set_defaults(func=_cmd_plot_domains)

    block = sub.add_parser("readme-results", help="the README's results section from a run's tables and figures")
    block.add_argument("--tables", nargs="+", required=True, help="table CSVs")
    block.add_argument("--figures", nargs="*", default=[], help="figure PNGs to show")
    block.add_argument("--figures-dir", default="docs/figures", help="where the README finds the figures")
    block.add_argument("--markdown", nargs="*", default=[], help="markdown tables appended as they are (domainbed.md)")
    block.add_argument("--headline", nargs="*", default=[], help="the headline's markdown, shown first")
    block.add_argument("--title", required=True)
    block.add_argument("--out", required=True)
    block.set_defaults(func=_cmd_readme_results)

    readme = sub.add_parser("readme-sync", help="put a results section (readme-results) into the README")
    readme.add_argument("--readme", default="README.md")
    readme.add_argument("--block", required=True)
    readme.add_argument("--figures", nargs="*", default=[])
    readme.add_argument("--figures-dir", default="docs/figures")
    readme.set_defaults(func=_cmd_readme_sync)

    from edsam.domainbed.commands import add_commands

    add_commands(sub)
    return parser


# The commands that load diffusers / transformers models. Only these pay for importing them (~9 CPU-s):
# the manifest and subset jobs of every synthetic set used to.
MODEL_COMMANDS = frozenset({"ldm-init", "ldm-build", "ldm-train", "ldm-release", "augment", "ldm-fidelity"})


def quiet_model_libraries() -> None:
    """diffusers/transformers warn at every load about config keys we override on purpose."""
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as diffusers_logging
        import transformers.utils.logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass


# The stream an error line also goes to while --log sends stdout and stderr to a file (else None).
_console = None


def fail(args, err) -> int:
    """Report a command's failure: one line in the job's log and, under --log, on the job's own stderr."""
    message = f"edsam {args.command}: error: {err}"
    print(message, file=sys.stderr, flush=True)
    if _console is not None:
        print(message, file=_console, flush=True)
    return 1


@contextlib.contextmanager
def job_log(path: str):
    """Point file descriptors 1 and 2 at ``path`` (so child processes, e.g. img2dataset's workers, write
    there too) and keep the original stderr as the console for error lines; both restored on exit."""
    global _console
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with open(path, "w") as log:  # truncated, as the shell's `> log 2>&1` did
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    _console = os.fdopen(os.dup(saved_err), "w", buffering=1)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _console.close()
        _console = None
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with job_log(args.log) if args.log else contextlib.nullcontext():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command in MODEL_COMMANDS:
            quiet_model_libraries()
        try:
            return args.func(args)
        except Exception as err:  # noqa: BLE001 - under --log, any failure gets its line on the console too
            if not args.log:
                raise
            traceback.print_exc()
            return fail(args, f"{type(err).__name__}: {err}")
