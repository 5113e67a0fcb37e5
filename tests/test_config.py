import json

import pytest

from cyclegan.config import ExperimentConfig, build_experiment, load_config_file


def test_defaults_are_the_official_ones():
    c = ExperimentConfig()
    assert (c.model.netG, c.model.netD, c.model.ngf, c.model.ndf, c.model.norm) == ("resnet_9blocks", "basic", 64, 64, "instance")
    assert (c.model.init_type, c.model.init_gain, c.model.no_dropout) == ("normal", 0.02, True)
    t = c.train
    assert (t.gan_mode, t.lambda_A, t.lambda_B, t.lambda_identity, t.pool_size) == ("lsgan", 10.0, 10.0, 0.5, 50)
    assert (t.lr, t.beta1, t.n_epochs, t.n_epochs_decay, t.batch_size, t.save_epoch_freq) == (0.0002, 0.5, 100, 100, 1, 5)
    assert (c.data.load_size, c.data.crop_size, c.data.direction, c.data.no_flip) == (286, 256, "AtoB", False)


def test_dict_round_trip_and_flat_keys():
    c = build_experiment({"ngf": 32, "lambda_A": 5.0, "no_flip": True, "name": "x"})
    assert ExperimentConfig.from_dict(json.loads(c.to_json())) == c
    assert c.model.ngf == 32 and c.train.lambda_A == 5.0 and c.data.no_flip and c.name == "x"
    assert (c.option("ngf"), c.option("lambda_A"), c.option("no_flip"), c.option("name")) == (32, 5.0, True, "x")


@pytest.mark.parametrize("options, message", [
    ({"netG": "resnet_12blocks"}, "resnet_6blocks"),
    ({"bogus": 1}, "unknown option 'bogus'"),
    ({"crop_size": 300}, "crop_size"),
    ({"no_flip": "yes"}, "true or false"),
    ({"ngf": "many"}, "must be an integer"),
    ({"ngf": 2.5}, "must be an integer"),
    ({"lr": "fast"}, "must be a number"),
    ({"input_nc": 1}, "identity loss"),
    ({"preprocess": "none", "batch_size": 2}, "cannot share a batch"),
    ({"num_threads": -2}, "must be -1 \\(auto\\), 0 or more"),
])
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        build_experiment(options)


def test_toml_and_yaml_files_flat_or_sectioned(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('name = "t"\n[model]\nngf = 16\n[train]\nlr = 0.001\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("ngf: 16\nlr: 0.001\nname: t\n")
    assert load_config_file(toml) == load_config_file(yaml) == {"name": "t", "ngf": 16, "lr": 0.001}


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("ngf = = 3")
    with pytest.raises(ValueError, match="bad.toml"):
        load_config_file(bad)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("nfg: 3\n")
    with pytest.raises(ValueError, match="u.yaml.*nfg"):
        load_config_file(unknown)
