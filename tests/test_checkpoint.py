import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from cyclegan.checkpoint import (Checkpoint, CheckpointError, flatten_state, load_generator, unflatten_state)
from cyclegan.training import Trainer


def test_state_flattening_round_trip_keeps_types():
    state = {"a": {0: torch.arange(3), 1: {"step": torch.tensor(2.0)}}, "t": (1, 2.5, None), "l": ["x", True]}
    tensors = {}
    skeleton = flatten_state(state, tensors)
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["t"] == (1, 2.5, None) and back["l"] == ["x", True]
    assert list(back["a"]) == [0, 1] and torch.equal(back["a"][0], torch.arange(3))
    assert back["a"][1]["step"].item() == 2.0


def test_unstorable_objects_are_refused():
    with pytest.raises(TypeError, match="object"):
        flatten_state({"x": object()}, {})


def test_load_generator_needs_no_architecture_flags(tiny_config, tmp_path):
    config = tiny_config(ngf=6, netG="resnet_6blocks", upsample="resize")
    trainer = Trainer(config)
    path = trainer.save(tmp_path / "run" / "latest.safetensors")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for direction, net in (("AtoB", trainer.model.g_ab), ("BtoA", trainer.model.g_ba)):
        for source in (path, path.parent):  # the file, or the run folder
            loaded = load_generator(source, direction)
            assert not loaded.training
            with torch.no_grad():
                assert torch.equal(loaded(x), net.eval()(x))


def test_weights_only_checkpoint_loads_but_cannot_resume(tiny_config, tmp_path):
    trainer = Trainer(tiny_config())
    path = trainer.save(tmp_path / "w.safetensors", with_training_state=False)
    checkpoint = Checkpoint(path)
    assert not checkpoint.has_training_state
    assert checkpoint.config == trainer.config
    with pytest.raises(CheckpointError, match="weights only"):
        checkpoint.training_state()


def test_a_crash_during_save_leaves_the_previous_checkpoint_intact(tiny_config, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config())
    path = trainer.save(tmp_path / "run" / "latest.safetensors")
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("cyclegan.checkpoint.save_file", crash)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*disk full; .*still holds the previous checkpoint"):
        trainer.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["latest.safetensors"]  # no temporary left behind
    assert Checkpoint(path).has_training_state


def test_foreign_or_missing_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="has no latest.safetensors"):
        Checkpoint(tmp_path)
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Checkpoint(pickled)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match="not a cyclegan checkpoint"):
        Checkpoint(other)


def test_newer_checkpoint_version_is_refused(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr("cyclegan.checkpoint.CHECKPOINT_VERSION", 99)
    path = Trainer(tiny_config()).save(tmp_path / "x.safetensors", with_training_state=False)
    monkeypatch.setattr("cyclegan.checkpoint.CHECKPOINT_VERSION", 1)
    with pytest.raises(CheckpointError, match="version 99"):
        Checkpoint(path)
