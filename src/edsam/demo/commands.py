"""``python -m edsam`` commands that exist only for the demo: its corpus and what is made from it.

``corpus`` renders the embedded corpus; ``ldm-pretrain-shards`` renders the tiny
LDM's pretraining corpus as shards; ``benchmark-from-corpus`` and
``domainbed-from-corpus`` package the corpus's domains as a clip_benchmark
webdataset and a DomainBed root.
"""

from __future__ import annotations

import json
import sys


def _cmd_corpus(args) -> int:
    from edsam.demo.corpus import CorpusSpec, build_corpus

    summary = build_corpus(CorpusSpec.from_config(json.loads(args.settings)), args.out)
    print(json.dumps({k: summary[k] for k in ("images", "url_rows", "broken_rows")}))
    return 0


def _cmd_ldm_pretrain_shards(args) -> int:
    from edsam.demo.corpus import CorpusSpec, pack_shards_with_manifest

    settings = json.loads(args.settings)
    corpus, pretrain = settings["corpus"], settings["pretrain"]
    # short_caption_fraction 0: the captions the committed tiny LDM was trained on (a rerun makes the same data)
    spec = CorpusSpec(seed=pretrain["corpus_seed"], image_size=corpus["image_size"],
                      source_domain=corpus["source_domain"], train_per_class=pretrain["per_class"],
                      short_caption_fraction=0.0)
    manifest = pack_shards_with_manifest(spec, spec.source_domain, "train", args.out, "ldm-pretrain")
    print(f"{manifest['samples']} samples in {len(manifest['shards'])} shards")
    return 0


def _cmd_benchmark_from_corpus(args) -> int:
    from edsam.evaluate.benchmarks import package_corpus_domain

    print(json.dumps(package_corpus_domain(args.corpus, args.domain, args.out)))
    return 0


def _cmd_domainbed_from_corpus(args) -> int:
    from edsam.domainbed.datasets import DomainBedError, export_corpus_domains

    try:
        facts = export_corpus_domains(args.corpus, args.out)
    except DomainBedError as err:  # one line naming the bad file, as every domainbed-* job does
        print(f"edsam {args.command}: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(facts))
    return 0


def register(sub) -> None:
    corpus = sub.add_parser("corpus", help="generate the embedded demo corpus")
    corpus.add_argument("--settings", required=True, help="the config's corpus block, as JSON")
    corpus.add_argument("--out", required=True, help="output folder")
    corpus.set_defaults(func=_cmd_corpus)

    pretrain = sub.add_parser("ldm-pretrain-shards", help="render the tiny LDM's pretraining corpus as shards")
    pretrain.add_argument("--settings", required=True, help='{"corpus": {...}, "pretrain": {...}} as JSON')
    pretrain.add_argument("--out", required=True)
    pretrain.set_defaults(func=_cmd_ldm_pretrain_shards)

    bench = sub.add_parser("benchmark-from-corpus", help="a demo corpus domain in clip_benchmark's webdataset layout")
    bench.add_argument("--corpus", required=True, help="the corpus folder (metadata.parquet, images/)")
    bench.add_argument("--domain", required=True)
    bench.add_argument("--out", required=True)
    bench.set_defaults(func=_cmd_benchmark_from_corpus)

    domainbed = sub.add_parser("domainbed-from-corpus", help="the demo corpus's domains as a DomainBed root")
    domainbed.add_argument("--corpus", required=True)
    domainbed.add_argument("--out", required=True)
    domainbed.set_defaults(func=_cmd_domainbed_from_corpus)
