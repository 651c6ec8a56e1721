"""edsam.compat.rebound, and the library signatures edsam's rebindings and library calls rely on.

The signature tests pin the installed open_clip_train and clip_benchmark: an
upgrade that renames a function or a parameter our wrappers re-pass fails
here, naming the function, the installed version and what edsam expects.
"""

import argparse
import inspect
import sys
import types

import pytest

from edsam.compat import installed_version, rebound, require


def _module(**names):
    module = types.ModuleType("edsam_fake_library")
    module.__dict__.update(names)
    return module


def test_rebound_binds_inside_the_block_and_restores_on_exit():
    module = _module(f=lambda: "original", g=1)
    original = module.f
    with rebound(module, f=lambda previous: lambda: f"wrapped {previous()}", g=lambda _: 2) as bound:
        assert bound is module and module.f() == "wrapped original" and module.g == 2
    assert module.f is original and module.g == 1


def test_rebound_restores_the_originals_when_the_block_raises():
    module = _module(f=len, g=1)
    with pytest.raises(ZeroDivisionError):
        with rebound(module, f=lambda _: abs, g=lambda _: 2):
            assert module.f is abs
            1 / 0
    assert module.f is len and module.g == 1


def test_rebound_nested_on_one_name_unwinds_in_order():
    module = _module(f=lambda: "a")
    original = module.f
    with rebound(module, f=lambda inner: lambda: inner() + "b"):
        first = module.f
        with rebound(module, f=lambda inner: lambda: inner() + "c"):
            assert module.f() == "abc"
        assert module.f is first
    assert module.f is original


def test_rebound_refuses_a_missing_name_naming_module_name_and_version():
    import open_clip_train.main as trainer

    before = trainer.create_loss
    with pytest.raises(RuntimeError) as error:
        with rebound(trainer, create_loss=lambda _: None, train_one_epoch_v2=lambda _: None):
            pass
    message = str(error.value)
    assert "open_clip_train.main" in message and "train_one_epoch_v2" in message and "create_loss" not in message
    from importlib.metadata import version

    assert f"open_clip_torch {version('open_clip_torch')}" in message
    assert trainer.create_loss is before  # nothing bound when one name is missing


def test_a_failing_factory_leaves_the_module_untouched():
    module = _module(f=len, g=1)

    def broken(_):
        raise ValueError("factory failed")

    with pytest.raises(ValueError, match="factory failed"):
        with rebound(module, f=lambda _: abs, g=broken):
            pass
    assert module.f is len and module.g == 1


def test_require_names_a_module_without_a_distribution():
    with pytest.raises(RuntimeError, match=r"edsam_fake_library \(edsam_fake_library \(version unknown\)\) "
                                           r"no longer defines h"):
        require(_module(f=1), "f", "h")


def test_the_training_entry_refuses_a_renamed_open_clip_train_name_and_unwinds(monkeypatch):
    import open_clip_train.data as data
    import open_clip_train.main as trainer

    from edsam.train.entry import installed

    data_before = (data.wds, data.get_wds_dataset)
    monkeypatch.delattr(trainer, "create_loss")
    renamed = r"open_clip_train.main \(open_clip_torch [\d.]+\) no longer defines create_loss"
    with pytest.raises(RuntimeError, match=renamed):
        with installed({"mix": {"streams": ["a.tar", "b.tar"], "weights": [1.0, 1.0]}}):
            pass
    assert (data.wds, data.get_wds_dataset) == data_before  # the seeding and mixing rebindings were undone


def test_seeding_and_mixing_refuse_renamed_data_names(monkeypatch):
    import open_clip_train.data as data

    from edsam.train import mixing, seeding

    factory = data.get_wds_dataset
    monkeypatch.delattr(data, "wds")
    with pytest.raises(RuntimeError, match="open_clip_train.data .* no longer defines wds"):
        with seeding.installed():
            pass
    assert data.get_wds_dataset is factory
    monkeypatch.delattr(data, "ResampledShards2")
    with pytest.raises(RuntimeError, match="no longer defines ResampledShards2"):
        with mixing.installed(None):  # checked with or without a mix
            pass


def test_the_mix_wraps_the_seeded_factory_and_both_unwind(monkeypatch):
    """entry.installed stacks the mix's wrapper on the seeding wrapper of open_clip_train.data.get_wds_dataset:
    an evaluation split passes through both (the seeding proxy live) into open_clip_train's factory, a
    training split is the mix's; on exit both names are open_clip_train's again."""
    import open_clip_train.data as data

    from edsam.train.entry import installed
    from edsam.train.seeding import _WebdatasetWithSeededShuffle

    calls = []

    def factory(args, preprocess_img, is_train, epoch=0, floor=False, tokenizer=None):
        calls.append((is_train, type(data.wds), data.wds.built))
        return argparse.Namespace(shared_epoch="epoch counter")

    monkeypatch.setattr(data, "get_wds_dataset", factory)
    wds = data.wds
    with installed({"mix": {"streams": ["a.tar", "b.tar"], "weights": [1.0, 1.0]}}):
        data.get_wds_dataset(argparse.Namespace(seed=0), None, False)
        with pytest.raises(ValueError, match="not --train-data"):  # the mix's own check, before the seeding
            data.get_wds_dataset(argparse.Namespace(train_data="c.tar", dataset_resampled=True), None, True)
    assert calls == [(False, _WebdatasetWithSeededShuffle, [])]
    assert data.get_wds_dataset is factory and data.wds is wds


def _check(function, expected, how):
    """``how``: "exact" (the parameter list), "prefix" (the first parameters, in order), "has" (by name)."""
    names = list(inspect.signature(function).parameters)
    ok = {"exact": names == list(expected), "prefix": names[: len(expected)] == list(expected),
          "has": set(expected) <= set(names)}[how]
    if not ok:
        module = sys.modules[function.__module__]
        raise AssertionError(f"{function.__module__}.{function.__qualname__} ({installed_version(module)}) takes "
                             f"{names}; edsam needs {how} {list(expected)}: update edsam's wrapper or call")


def _open_clip_train_main():
    import open_clip_train.main as trainer

    return trainer


def _open_clip_train_data():
    import open_clip_train.data as data

    return data


OPEN_CLIP_TRAIN = [
    # entry._wrap_model_factory passes *args/**kwargs through and unpacks three values
    ("main", "create_model_and_transforms", ["model_name", "pretrained"], "prefix"),
    ("main", "get_tokenizer", ["model_name"], "prefix"),
    ("main", "create_loss", ["args"], "exact"),  # entry._wrap_loss_factory takes exactly (args)
    # entry._wrap_epoch re-passes these positionally, tb_writer by keyword
    ("main", "train_one_epoch", ["model", "data", "loss", "epoch", "optimizer", "scaler", "scheduler", "dist_model",
                                 "args", "tb_writer"], "exact"),
    # mixing._mixing_dataset_factory re-passes these; seeding's wrapper reads args.seed and the result's shared_epoch
    ("data", "get_wds_dataset", ["args", "preprocess_img", "is_train", "epoch", "floor", "tokenizer"], "exact"),
    ("data", "ResampledShards2", ["urls", "weights", "worker_seed", "deterministic", "epoch"], "has"),
    ("data", "SharedEpoch", ["epoch"], "has"),
    ("data", "DataInfo", ["dataloader", "shared_epoch"], "has"),
]


@pytest.mark.parametrize("module,name,expected,how", OPEN_CLIP_TRAIN,
                         ids=[f"{m}.{n}" for m, n, _, _ in OPEN_CLIP_TRAIN])
def test_open_clip_train_signatures_are_the_ones_edsam_wraps(module, name, expected, how):
    library = {"main": _open_clip_train_main, "data": _open_clip_train_data}[module]()
    _check(getattr(library, name), expected, how)


def test_open_clip_train_data_sees_webdataset_as_wds():
    import webdataset

    data = _open_clip_train_data()
    assert data.wds is webdataset, \
        "open_clip_train.data.wds is not webdataset: edsam.train.seeding's proxy needs updating"
    assert all(hasattr(webdataset, name) for name in ("shuffle", "PipelineStage", "DataPipeline")), \
        "webdataset lost a stage edsam.train.seeding / mixing use"


def test_the_wrappers_take_what_the_originals_take():
    """The wrappers' own signatures equal the functions they replace (open_clip_train calls them)."""
    from edsam.train.entry import PATCHED, _replacements, _wrap_epoch
    from edsam.train.mixing import _mixing_dataset_factory

    trainer, data = _open_clip_train_main(), _open_clip_train_data()
    assert set(_replacements({})) == set(PATCHED)
    wrapped = _wrap_epoch(trainer.train_one_epoch, {}, {})
    assert inspect.signature(wrapped) == inspect.signature(trainer.train_one_epoch)
    mixed = _mixing_dataset_factory(data.get_wds_dataset, {"streams": [], "weights": []})
    assert inspect.signature(mixed) == inspect.signature(data.get_wds_dataset)


def _clip_benchmark(path):
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


CLIP_BENCHMARK = [  # what edsam.evaluate.clip_bench (and finetune, domainbed.features) call, and how
    ("clip_benchmark.models.load_clip", ["model_type", "model_name", "pretrained", "cache_dir", "device"], "has"),
    ("clip_benchmark.datasets.builder.build_dataset",
     ["dataset_name", "root", "transform", "split", "download", "language", "task"], "has"),
    ("clip_benchmark.datasets.builder.build_wds_dataset", ["dataset_name", "transform", "split", "data_dir"], "has"),
    ("clip_benchmark.metrics.zeroshot_classification.evaluate",
     ["model", "dataloader", "tokenizer", "classnames", "templates", "device", "amp", "verbose"], "prefix"),
    ("clip_benchmark.metrics.zeroshot_classification.zero_shot_classifier",
     ["model", "tokenizer", "classnames", "templates", "device", "amp"], "exact"),
    ("clip_benchmark.metrics.zeroshot_classification.accuracy", ["output", "target", "topk"], "exact"),
    ("clip_benchmark.metrics.linear_probe.train",
     ["dataloader", "input_shape", "output_shape", "weight_decay", "lr", "epochs", "amp", "device", "seed"], "exact"),
    ("clip_benchmark.metrics.linear_probe.infer", ["model", "dataloader", "amp", "device"], "exact"),
    ("clip_benchmark.metrics.linear_probe.cosine_lr", ["optimizer", "base_lrs", "warmup_length", "steps"], "exact"),
    ("clip_benchmark.metrics.linear_probe.Featurizer", ["model", "normalize"], "exact"),
    ("clip_benchmark.metrics.linear_probe.FeatureDataset", ["features", "targets"], "exact"),
]


@pytest.mark.parametrize("path,expected,how", CLIP_BENCHMARK, ids=[p.rpartition(".")[2] for p, _, _ in CLIP_BENCHMARK])
def test_clip_benchmark_signatures_are_the_ones_edsam_calls(path, expected, how):
    _check(_clip_benchmark(path), expected, how)


def test_our_cpu_head_trainer_takes_clip_benchmarks_parameters():
    from edsam.evaluate.clip_bench import train_linear_head

    assert inspect.signature(train_linear_head) == inspect.signature(_clip_benchmark(
        "clip_benchmark.metrics.linear_probe.train"))


@pytest.mark.parametrize("function,how", [
    (lambda model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, writer=None: None, "exact"),
    (lambda args, preprocess, is_train: None, "prefix"),
    (lambda args, is_train: None, "has"),
])
def test_a_changed_signature_fails_naming_function_and_version(function, how):
    """The check above is not vacuous: a renamed or dropped parameter fails it, with the library's version."""
    _open_clip_train_main()  # the module the fake function claims to be from
    expected = {"exact": OPEN_CLIP_TRAIN[3][2], "prefix": ["args", "preprocess_img"], "has": ["args", "epoch"]}[how]
    function.__module__ = "open_clip_train.main"
    with pytest.raises(AssertionError, match=r"\(open_clip_torch [\d.]+\) takes .* edsam needs " + how):
        _check(function, expected, how)
