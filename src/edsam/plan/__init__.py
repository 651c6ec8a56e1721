"""What the workflow builds under one validated config, as plain tested functions of it.

The ``.smk`` files validate the config, constrain wildcards and hold thin
input functions; everything they compute from the config lives here:

* :class:`Plan` (this module): the config, the results layout, and where each
  input is (a dataset's URL list, an LDM, a benchmark root, a teacher);
* :mod:`edsam.plan.settings`: the ``--settings`` JSON of each stage's jobs;
* :mod:`edsam.plan.resources`: each job's cluster resources;
* :mod:`edsam.plan.targets`: the target lists (``all``, the tables, the headline, DomainBed).
"""

from __future__ import annotations

import os
from functools import cached_property

from edsam.layout import ResultsLayout, RunId

ARCHITECTURE = "architecture:"  # augment.ldm: architecture:NAME (random weights, rule ldm_architecture)
LOCAL_DIR = "local-dir:"


class Plan:
    """One validated config (schema defaults filled) and the repository it runs from."""

    def __init__(self, config: dict, repo: str | os.PathLike = "."):
        self.config = config
        self.repo = str(repo)
        self.layout = ResultsLayout(config["results_dir"])

    @property
    def results(self) -> str:
        return self.layout.root

    @cached_property
    def datasets(self) -> list[str]:
        return sorted(self.config["datasets"])

    @property
    def paper_values(self) -> str:
        return os.path.join(self.repo, "data", "paper_values.csv")

    def repo_file(self, *parts: str) -> str:
        return os.path.join(self.repo, *parts)

    def bundled(self, path: str) -> str:
        """A relative path that is not in the working directory but ships with the repo (models/...)
        resolves to the repo's copy, so the workflow runs from any --directory."""
        if os.path.isabs(path) or path.startswith(f"{self.results}/") or os.path.exists(path):
            return path
        shipped = os.path.join(self.repo, path)
        return shipped if os.path.exists(shipped) else path

    # ------------------------------------------------------------ datasets
    def source(self, dataset: str) -> str:
        return self.config["datasets"][dataset]["source"]

    def has_corpus(self) -> bool:
        return any(self.source(d) == "corpus" for d in self.datasets)

    def corpus_train_rows(self) -> int:
        from edsam.demo.corpus import CLASSNAMES

        corpus = self.config["corpus"]
        return corpus["train_per_class"] * len(CLASSNAMES) + sum(corpus["broken"].values())

    def dataset_config(self, name: str) -> dict:
        """A dataset's config entry with the demo corpus's or the rehearsal's generated paths filled in."""
        dataset = dict(self.config["datasets"][name])
        source = dataset.pop("source")
        if source == "corpus":
            corpus = self.layout.corpus
            dataset.setdefault("url_list", f"{corpus}/urls.parquet")
            dataset.setdefault("loopback_root", f"{corpus}/images")
            dataset.setdefault("expected_samples", self.corpus_train_rows())
        elif source == "rehearsal":
            folder = self.layout.rehearsal_input("pairs", name)
            dataset.update(url_list=f"{folder}/urls.{dataset.get('input_format', 'parquet')}",
                           loopback_root=f"{folder}/images", expected_samples=self.config["rehearsal"]["pairs"])
        return dataset

    def download_inputs(self, dataset: str) -> list[str]:
        """The generated URL list's marker (demo corpus, rehearsal); nothing for an external URL list:
        it is checked when the job starts (a clear error naming the file), so the paper-scale DAG builds
        before any data is staged."""
        source = self.source(dataset)
        if source == "corpus":
            return [f"{self.layout.corpus}/corpus.json"]
        if source == "rehearsal":
            return [f"{self.layout.rehearsal_input('pairs', dataset)}/pairs.json"]
        return []

    # ------------------------------------------------------------ LDMs
    def pretrained_ldm(self) -> str:
        """augment.ldm: a folder or hub id, or architecture:NAME -- models/architectures/NAME built with random
        weights by rule ldm_architecture (the rehearsal runs the paper's LDM this way)."""
        source = self.config["augment"]["ldm"]
        if source.startswith(ARCHITECTURE):
            return self.layout.architecture_ldm(source.removeprefix(ARCHITECTURE))
        return self.bundled(source)

    def ldm_source(self, ldm: str, dataset: str) -> str:
        """Where the {ldm} wildcard's pipeline is: a folder or a hub id."""
        if ldm == "pretrained":
            return self.pretrained_ldm()
        if ldm == "retrained":
            return f"{self.layout.retrained_ldm(dataset)}/pipeline"
        raise ValueError(f"unknown LDM {ldm!r}: use 'pretrained' or 'retrained'")

    def pretrained_ldm_inputs(self) -> list[str]:
        """What the pretrained pipeline depends on: the training rule's train.json when the
        workflow trains it, its index file when it is a local folder, nothing for a hub id."""
        source = self.pretrained_ldm().rstrip("/")
        if source.startswith(f"{self.results}/ldm/architecture/"):
            return [f"{source}/model_index.json"]
        if source.startswith(f"{self.results}/"):
            return [os.path.join(os.path.dirname(source), "train.json")]
        return [os.path.join(source, "model_index.json")] if os.path.isdir(source) else []

    def ldm_inputs(self, ldm: str, dataset: str) -> list[str]:
        if ldm == "retrained":
            return [f"{self.layout.retrained_ldm(dataset)}/train.json"]
        return self.pretrained_ldm_inputs()

    # ------------------------------------------------------------ training
    def open_clip_model(self, key: str) -> str:
        """train.models[key]; a relative local-dir: found in the working directory, else in the repo."""
        model = self.config["train"]["models"][key]
        if model.startswith(LOCAL_DIR):
            return LOCAL_DIR + self.bundled(model.removeprefix(LOCAL_DIR))
        return model

    def rewrites_csv(self, dataset: str) -> str:
        """LaCLIP rewrites: the configured file for this dataset, else the deterministic rule's (where allowed:
        an external dataset needs its file or train.laclip.allow_rule_rewrites, edsam.train.captions)."""
        from edsam.train.captions import configured_rewrites

        return configured_rewrites(self.config, dataset) or self.layout.laclip(dataset, "rewrites.csv")

    def configured_rewrites(self, dataset: str) -> str | None:
        return self.config["train"]["laclip"]["rewrites"].get(dataset)

    # ------------------------------------------------------------ benchmarks
    def benchmark_spec(self, name: str) -> dict:
        return self.config["evaluate"]["benchmarks"][name]

    def benchmark_root(self, name: str) -> str:
        """Where a benchmark's clip_benchmark webdataset root is (demo domains are built under results/)."""
        spec = self.benchmark_spec(name)
        if spec.get("rehearsal"):
            return self.layout.rehearsal_input("benchmarks", name)
        return spec["root"] if "root" in spec else self.layout.benchmark(name)

    def benchmark_marker(self, name: str) -> list[str]:
        """The packaging rule's marker for a corpus-built benchmark; nothing for a staged one (checked at run time)."""
        spec = self.benchmark_spec(name)
        if "corpus_domain" in spec or spec.get("rehearsal"):
            return [f"{self.benchmark_root(name)}/benchmark.json"]
        return []

    def benchmark_dataset(self, name: str) -> str:
        return self.benchmark_spec(name).get("dataset", f"wds/{name}")

    # ------------------------------------------------------------ DomainBed
    @property
    def domainbed(self) -> dict:
        return self.config["domainbed"]

    @cached_property
    def dg_datasets(self) -> dict:
        """The DomainBed sets that run: all configured ones, or none without a teacher."""
        return self.domainbed["datasets"] if self.domainbed["teachers"] else {}

    def dg_domains(self, dbset: str) -> list[str]:
        return list(self.dg_datasets[dbset].get("domains") or self.config["corpus"]["domains"])

    def dg_root(self, dbset: str) -> str:
        """A staged DomainBed root, or the demo corpus's / the rehearsal's generated one under results/."""
        spec = self.dg_datasets[dbset]
        if spec.get("rehearsal"):
            return self.layout.rehearsal_input("domainbed", dbset)
        return self.layout.domainbed_data(dbset) if spec.get("corpus") else spec["root"]

    def dg_data_marker(self, dbset: str) -> list[str]:
        """The marker of the rule that writes a corpus or rehearsal root; nothing for a staged root (checked
        when the job starts)."""
        spec = self.dg_datasets[dbset]
        return [f"{self.dg_root(dbset)}/domainbed.json"] if spec.get("corpus") or spec.get("rehearsal") else []

    def teacher_dir(self, name: str) -> str:
        """The open_clip local-dir of a teacher: a run this workflow trains (no seed given: `seed`), or a
        pretrained folder."""
        teacher = self.domainbed["teachers"][name]
        if "run" in teacher:
            return f"{RunId.parse(teacher['run'], self.config['seed']).train_dir(self.results)}/model"
        return self.bundled(teacher["local_dir"])

    def teacher_weights(self, name: str) -> list[str]:
        """A trained teacher's weights (so the training runs first); nothing for a pretrained folder."""
        if "run" in self.domainbed["teachers"][name]:
            return [f"{self.teacher_dir(name)}/open_clip_model.safetensors"]
        return []
