"""The naming contract (edsam.layout): one spelling per run and synthetic set."""

import pytest

from edsam.layout import RunId, Variant, data_name, number, parse_data


@pytest.mark.parametrize("value,text", [(1.0, "1"), (1, "1"), (0.5, "0.5"), (0.05, "0.05"), (10.0, "10")])
def test_numbers_have_one_spelling(value, text):
    assert number(value) == text


def test_rho_one_point_zero_is_the_same_set_as_rho_one():
    """augment.rho: 1.0 (YAML float) and a table's rho 1 name the same set, not two."""
    assert str(Variant("edsam", 1.0, 10)) == str(Variant("edsam", 1, 10)) == "edsam-rho1-m10"
    assert Variant.parse("edsam-rho1.0-m10") == Variant.parse("edsam-rho1-m10")


def test_run_ids_round_trip_and_carry_their_seed():
    run = RunId("demo", "tiny-rn", "slip", "ada", data_name("pretrained", Variant("random", 0.2, 3)), 7)
    assert str(run) == "demo/tiny-rn/slip-ada/pretrained-random-rho0.2-m3/seed7"
    assert RunId.parse(str(run)) == run
    assert RunId.parse("demo/tiny-rn/clip-none/real", default_seed=4).seed == 4  # a teacher named without seed
    assert run.result("results", "photo", "finetune") == \
        "results/eval/demo/tiny-rn/slip-ada/pretrained-random-rho0.2-m3/seed7/photo/finetune.json"
    assert run.with_seed(1).train_dir("r") == "r/train/demo/tiny-rn/slip-ada/pretrained-random-rho0.2-m3/seed1"
    assert parse_data("real") == (None, None)
    assert parse_data("retrained-edsam-rho0.5-m1") == ("retrained", Variant("edsam", 0.5, 1))


@pytest.mark.parametrize("text", ["demo/tiny-rn/clip-none", "demo/tiny-rn/foo-none/real", "demo/m/clip-none/real/7",
                                  "demo/m/clip-none/other-edsam-rho1-m1"])
def test_bad_run_names_are_refused(text):
    with pytest.raises(ValueError):
        RunId.parse(text)


@pytest.mark.parametrize("text", ["edsam-rho-m1", "noise-rho0.5-m1", "edsam-rho0.5"])
def test_bad_variants_are_refused(text):
    with pytest.raises(ValueError, match="variant"):
        Variant.parse(text)
