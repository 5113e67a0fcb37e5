"""The Hugging Face Hub: cyclegan push, hf:// names wherever a checkpoint is taken, the cache offline, the
refusal of pickles, and download --from hf; against a stand-in Hub on 127.0.0.1 (tests/helpers/hub_server.py)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import cyclegan
from cyclegan import cli
from cyclegan.checkpoint import Checkpoint, load_generator
from cyclegan.evaluate import evaluate_run
from cyclegan.hub import HubError, HubModel
from cyclegan.run import fit
from cyclegan.training import Trainer
from cyclegan.translate import Translator

from conftest import write_images

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from hub_server import HubStandIn  # noqa: E402

pytest.importorskip("huggingface_hub", reason="a dev extra; make test installs it")
TOKEN = "hf_standin_token"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The stand-in Hub, the client pointed at it, a fresh cache, a token where huggingface_hub looks for one."""
    with HubStandIn() as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.chdir(tmp_path)  # results/OWNER--NAME of Hub models land here
        yield standin


@pytest.fixture
def run(tiny_config, dataroot):
    """A finished tiny run with generator averages, a test split with ground truth, and an evaluation."""
    write_images(dataroot / "testA", 2, size=(32, 32), seed=5)
    write_images(dataroot / "testB", 2, size=(32, 32), seed=6)
    truth = dataroot / "testA_truth"
    for path in sorted((dataroot / "testA").glob("*.png")):
        truth.mkdir(exist_ok=True)
        Image.fromarray(255 - np.array(Image.open(path))).save(truth / path.name)
    folder = fit(Trainer(tiny_config(name="horse2zebra_tiny", max_iters=3, ema_decay=0.9, display_freq=1)),
                 show_progress=False)
    evaluate_run(folder, fid=False, truth=truth)
    return folder


def push(run_dir: Path, *extra: str) -> int:
    return cli.main(["push", str(run_dir), "--repo", "alice/tiny", *extra])


def test_a_pushed_run_loads_by_name_key_for_key_and_translates_alike(hub, run, tmp_path):
    assert push(run) == 0
    files = hub.repos["alice/tiny"].branches["main"]
    assert set(files) == {"model.safetensors", "config.json", "README.md", "sample.png"}
    assert json.loads(files["config.json"]) == json.loads(Checkpoint(run).config.to_json())
    posts = [(path, token) for method, path, token in hub.requests if method == "POST"]
    assert posts and all(token == TOKEN for _, token in posts)  # huggingface_hub's own token, sent by it
    assert TOKEN not in files["config.json"].decode() + files["README.md"].decode()

    local, pulled = Checkpoint(run), Checkpoint("hf://alice/tiny")
    assert pulled.path.is_relative_to(tmp_path / "hf_cache") and not pulled.has_training_state
    pushed = sorted(k for k in local.keys if k.startswith(("g_ab_ema.", "g_ba_ema.")))
    assert sorted(pulled.keys) == pushed  # the generator averages, nothing else
    theirs = pulled.tensors()
    for key, value in local.tensors().items():
        if key in theirs:
            assert torch.equal(value, theirs[key]), key

    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for direction in ("AtoB", "BtoA"):
            assert torch.equal(cyclegan.load_generator("hf://alice/tiny", direction)(x), load_generator(run, direction)(x))
    image = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (29, 37, 3), dtype=np.uint8)).save(image)
    for source, out in ((str(run), "local"), ("hf://alice/tiny", "hub")):
        assert cli.main(["translate", str(image), "--checkpoint", source, "--output", str(tmp_path / out), "--quiet"]) == 0
    assert np.array_equal(np.array(Image.open(tmp_path / "local" / "odd.png")), np.array(Image.open(tmp_path / "hub" / "odd.png")))
    assert Translator.from_checkpoint("hf://alice/tiny", "BtoA").translate_tensor(x[0]).shape == (3, 32, 32)


def test_the_card_holds_the_numbers_of_the_run(hub, run):
    assert push(run, "--license", "mit") == 0
    card = hub.repos["alice/tiny"].branches["main"]["README.md"].decode()
    report = json.loads(next(run.glob("eval_*.json")).read_text())
    psnr = report["results"]["AtoB"]["truth"]["psnr_db"]
    cycle = report["results"]["BtoA"]["cycle_l1_255"]
    assert card.startswith("---\nlicense: mit\nlibrary_name: cyclegan\n")
    assert f"{psnr:.2f} dB" in card and f"{cycle:.2f}" in card
    info = Checkpoint(run).info
    assert f"{info['total_iters']} iterations" in card and "`--recipe paper`" in card and "`--ema_decay 0.9`" in card
    assert "`data`" in card  # the training data's name (the tiny data folder is called data)
    assert "cyclegan translate --checkpoint hf://alice/tiny" in card and "--direction BtoA" in card
    assert "Zhu, Jun-Yan" in card and "![samples](sample.png)" in card


def test_discriminators_on_request_and_a_branch(hub, run):
    assert push(run, "--with_discriminators", "--revision", "dev", "--private") == 0
    assert hub.repos["alice/tiny"].private
    assert "model.safetensors" not in hub.repos["alice/tiny"].branches["main"]
    pulled = Checkpoint("hf://alice/tiny@dev")
    assert pulled.has_network("d_a") and pulled.has_network("d_b") and pulled.has_network("g_ab_ema")
    assert not any(key.startswith("state/") for key in pulled.keys)
    assert pulled.output_dir == Path("results") / "alice--tiny@dev"
    with pytest.raises(HubError, match="has no model.safetensors"):
        Checkpoint("hf://alice/tiny")


def test_test_and_evaluate_of_a_hub_model_write_under_results(hub, run, dataroot):
    assert push(run) == 0
    report = evaluate_run("hf://alice/tiny", dataroot=dataroot, fid=False)
    assert Path(report["path"]).parent.resolve() == (Path("results") / "alice--tiny").resolve()
    assert cli.main(["test", "--checkpoint", "hf://alice/tiny", "--dataroot", str(dataroot), "--quiet"]) == 0
    assert list((Path("results") / "alice--tiny").glob("test_*/index.html"))


def test_offline_a_cached_model_loads_and_a_missing_one_says_so(hub, run, monkeypatch):
    assert push(run) == 0
    online = Checkpoint("hf://alice/tiny").tensors()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: offline must not ask
    asked = len(hub.requests)
    cached = Checkpoint("hf://alice/tiny").tensors()
    assert cached.keys() == online.keys() and all(torch.equal(cached[k], online[k]) for k in online)
    assert len(hub.requests) == asked
    with pytest.raises(HubError, match="not in the Hub cache and HF_HUB_OFFLINE is set"):
        Checkpoint("hf://alice/never_fetched")


def test_a_repository_of_pickles_is_refused_before_anything_is_downloaded(hub):
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    hub.add_files("bob/pickled", {"pytorch_model.bin": buffer.getvalue(), "config.json": b"{}"})
    with pytest.raises(HubError, match="pickled weights \\(pytorch_model.bin\\)"):
        Checkpoint("hf://bob/pickled")
    assert not any("/resolve/" in path for _, path, _ in hub.requests)


@pytest.mark.parametrize("name,words", [("hf://nobody/nothing", "no model repository nobody/nothing"),
                                        ("hf://alice/tiny@v9", "no revision 'v9'")])
def test_a_missing_repository_or_revision_is_named(hub, run, name, words):
    assert push(run) == 0
    with pytest.raises(HubError, match=words):
        Checkpoint(name)


def test_resume_from_the_hub_is_refused_with_the_reason(hub, run, capsys):
    assert cli.main(["train", "--resume", "hf://alice/tiny"]) != 0
    assert "holds weights only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds weights only"):
        Trainer.resume("hf://alice/tiny")


@pytest.mark.parametrize("name", ["hf://alice", "hf://alice/tiny@", "hf://a/b/c", "hf:///tiny", "alice/tiny"])
def test_names_that_are_not_hub_names(name):
    with pytest.raises(HubError, match="not a Hub name"):
        HubModel.parse(name)


def test_the_command_line_keeps_the_double_slash(capsys):
    parser = cli.make_parser()
    args = parser.parse_args(["translate", "x.png", "--checkpoint", "hf://alice/tiny@dev", "--output", "o"])
    assert args.checkpoint == "hf://alice/tiny@dev"
    with pytest.raises(SystemExit):
        parser.parse_args(["translate", "x.png", "--checkpoint", "hf://alice", "--output", "o"])
    assert "not a Hub name" in capsys.readouterr().err


def test_download_model_from_a_hub_mirror_of_the_zoo(hub, tmp_path, monkeypatch):
    from test_download import tiny_zoo_generator

    official, weights = tiny_zoo_generator(monkeypatch)
    hub.add_files("mirror/cyclegan-zoo", {"horse2zebra/latest_net_G.pth": weights})
    args = ["download", "model", "horse2zebra", "--from", "hf", "--repo", "mirror/cyclegan-zoo", "--to",
            str(tmp_path / "zoo"), "--quiet"]
    assert cli.main(args) == 0
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(load_generator(tmp_path / "zoo" / "horse2zebra")(x), official(x), atol=1e-6)
    with safe_open(str(tmp_path / "zoo" / "horse2zebra" / "latest.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == "cyclegan"
    assert cli.main(["download", "model", "style_monet", "--from", "hf", "--repo", "mirror/cyclegan-zoo",
                     "--to", str(tmp_path / "zoo"), "--quiet"]) != 0
    assert cli.main(["download", "model", "horse2zebra", "--from", "hf", "--to", str(tmp_path / "z2")]) != 0


def test_export_and_serve_take_a_hub_model(hub, run, tmp_path):
    pytest.importorskip("onnxruntime")
    from cyclegan.export import OnnxGenerator
    from cyclegan.serve import TranslationService

    assert push(run) == 0
    onnx = tmp_path / "g.onnx"
    assert cli.main(["export", "--checkpoint", "hf://alice/tiny", "--direction", "BtoA", "--output", str(onnx)]) == 0
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(OnnxGenerator(onnx)(x), load_generator(run, "BtoA")(x), atol=1e-5)
    assert list(TranslationService("hf://alice/tiny").translators) == ["AtoB", "BtoA"]


def test_a_cut_run_pushes_its_one_generator_with_the_cut_citation(tiny_config, tmp_path):
    from cyclegan.sharing import build_repo_folder

    run = fit(Trainer(tiny_config(name="cut", model="cut", num_patches=8, max_iters=1)), show_progress=False)
    files = build_repo_folder(Checkpoint(run), tmp_path / "repo", repo="alice/cut")
    assert {f.name for f in files} == {"model.safetensors", "config.json", "README.md"}  # no samples were saved
    assert sorted({key.split(".")[0] for key in Checkpoint(tmp_path / "repo" / "model.safetensors").keys}) == ["g_ab"]
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "CUT (one generator, unpaired data)" in card and "Contrastive Learning for Unpaired" in card
    assert "--direction BtoA" not in card and "tags:\n- cyclegan\n" in card


def test_the_model_cards_evaluation_table_gives_every_number_of_the_report():
    from cyclegan.sharing import evaluation_section

    report = {"epoch": "7", "protocol": {"dataroot": "data/"}, "results": {
        "AtoB": {"images": 45, "fid": 41.234, "kid": 0.0123, "kid_std_error": 0.0011, "cycle_l1_255": 2.345,
                 "colour_swd_255": 12.057, "truth": {"psnr_db": 25.771, "ssim": 0.8904}},
        "BtoA": {"images": 45, "cycle_l1_255": 3.1, "colour_swd_255": None}}}
    table = evaluation_section(report)
    assert "| AtoB | 45 | 41.23 | 0.0123 ± 0.0011 | 2.35 | 12.06 | 25.77 dB | 0.890 |" in table
    assert "| BtoA | 45 | – | – | 3.10 | – | – | – |" in table and "epoch 7, data/" in table
