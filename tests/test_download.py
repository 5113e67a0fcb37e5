"""Downloads against a local HTTP server on 127.0.0.1 that serves small files the tests make."""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from cyclegan import cli
from cyclegan.checkpoint import Checkpoint
from cyclegan.download import DATASET_URL_ENV, DownloadError, download_dataset, download_model

from test_official import official_resnet


class Server:
    """Serves ``files`` (path -> bytes) with Range support; ``drop_once`` paths break off half way once."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def dataset_zip(name: str, *, top_folder: bool = True, extra: dict[str, bytes] | None = None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for sub in ("trainA", "trainB", "testA", "testB"):
            png = io.BytesIO()
            Image.new("RGB", (8, 8), (10, 200, 30)).save(png, "PNG")
            zf.writestr(f"{name + '/' if top_folder else ''}{sub}/0.png", png.getvalue())
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return buffer.getvalue()


def test_dataset_is_downloaded_verified_and_extracted(server, tmp_path):
    server.files["/mini.zip"] = dataset_zip("mini")
    folder = download_dataset("mini", to=tmp_path, url=server.url, show_progress=False)
    assert folder == tmp_path / "mini"
    assert sorted(p.name for p in folder.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini"]  # no .zip, .part or staging folder left
    assert download_dataset("mini", to=tmp_path, url=server.url) == folder and len(server.requests) == 1


def test_zip_without_a_top_folder_lands_in_the_same_layout(server, tmp_path):
    server.files["/facades.zip"] = dataset_zip("facades", top_folder=False)
    folder = download_dataset("facades", to=tmp_path, url=server.url, show_progress=False)
    assert (folder / "trainA" / "0.png").is_file()


def test_a_broken_download_resumes_with_a_range_request(server, tmp_path):
    body = dataset_zip("horse2zebra", extra={"padding.bin": bytes(range(256)) * 400})
    server.files["/horse2zebra.zip"] = body
    server.drop_once.add("/horse2zebra.zip")
    with pytest.raises(DownloadError, match="broke off after .* run the same command again"):
        download_dataset("horse2zebra", to=tmp_path, url=server.url, show_progress=False)
    part = tmp_path / "horse2zebra.zip.part"
    assert 0 < part.stat().st_size < len(body) and not (tmp_path / "horse2zebra").exists()
    folder = download_dataset("horse2zebra", to=tmp_path, url=server.url, show_progress=False)
    assert server.requests[-1][1] == f"bytes={len(body) // 2}-"
    assert (folder / "padding.bin").read_bytes() == bytes(range(256)) * 400


def test_a_corrupt_archive_never_takes_the_dataset_place(server, tmp_path):
    server.files["/maps.zip"] = b"<html>mirror error page</html>"
    with pytest.raises(DownloadError, match="not a valid zip archive"):
        download_dataset("maps", to=tmp_path, url=server.url, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_archive_escaping_its_folder_is_refused(server, tmp_path):
    server.files["/ae_photos.zip"] = dataset_zip("ae_photos", extra={"../../escaped.txt": b"x"})
    with pytest.raises(DownloadError, match="outside"):
        download_dataset("ae_photos", to=tmp_path / "datasets", url=server.url, show_progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "datasets" / "ae_photos").exists()


def test_offline_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot reach .*Offline\? .*place it at"):
        download_dataset("mini", to=tmp_path, url=f"http://127.0.0.1:{port}", show_progress=False)


def tiny_zoo_generator(monkeypatch) -> tuple[torch.nn.Module, bytes]:
    """An official ResNet generator of a tiny size, its .pth bytes, and the zoo's options shrunk to match."""
    monkeypatch.setattr("cyclegan.download.PRETRAINED_OPTIONS",
                        {"netG": "resnet_6blocks", "ngf": 4, "norm": "instance", "no_dropout": True,
                         "input_nc": 3, "output_nc": 3, "lambda_identity": 0.5})
    official = official_resnet(ngf=4, n_blocks=6)
    buffer = io.BytesIO()
    torch.save(official.state_dict(), buffer)
    return official, buffer.getvalue()


def test_a_pretrained_model_becomes_a_ready_checkpoint(server, tmp_path, monkeypatch):
    official, server.files["/horse2zebra.pth"] = tiny_zoo_generator(monkeypatch)
    run = download_model("horse2zebra", to=tmp_path, url=server.url, show_progress=False)
    assert (tmp_path / "horse2zebra_pretrained" / "latest_net_G.pth").is_file()
    from cyclegan.translate import Translator

    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(Translator.from_checkpoint(run, device="cpu").translate_tensor(x), official(x), atol=1e-6)
    assert Checkpoint(run).config.model.netG == "resnet_6blocks"


def test_a_corrupt_model_is_removed(server, tmp_path):
    server.files["/style_monet.pth"] = b"not a torch file"
    with pytest.raises(DownloadError, match="not a usable generator"):
        download_model("style_monet", to=tmp_path, url=server.url, show_progress=False)
    assert not list(tmp_path.rglob("*.pth*"))


def test_download_command_with_a_mirror_from_the_environment(server, tmp_path, monkeypatch, capsys):
    server.files["/mini.zip"] = dataset_zip("mini")
    monkeypatch.setenv(DATASET_URL_ENV, server.url)
    assert cli.main(["download", "dataset", "mini", "--to", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "mini" / "trainB" / "0.png").is_file()
    assert cli.main(["download", "dataset", "horse3zebra", "--to", str(tmp_path)]) == 2
    assert "valid: apple2orange" in capsys.readouterr().err


# ---- the pix2pix zoo ------------------------------------------------------------------------------

def dataset_tar(name: str, *, extra: dict[str, bytes] | None = None) -> bytes:
    """An official-looking pix2pix archive: NAME/{train,val,test}/1.jpg of side-by-side A|B images."""
    import tarfile

    from PIL import Image

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        members = {f"{name}/{split}/1.jpg": None for split in ("train", "val", "test")} | (extra or {})
        for member, data in members.items():
            if data is None:
                jpeg = io.BytesIO()
                Image.new("RGB", (16, 8), (200, 10, 30)).save(jpeg, "JPEG")
                data = jpeg.getvalue()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_pix2pix_dataset_comes_as_tar_gz_and_lands_in_the_aligned_layout(server, tmp_path):
    server.files["/facades.tar.gz"] = dataset_tar("facades")
    folder = download_dataset("facades", to=tmp_path, url=server.url, show_progress=False, model="pix2pix")
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train", "val"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["facades"]  # no archive, .part or staging folder left
    with pytest.raises(ValueError, match="unknown pix2pix dataset 'horse2zebra'"):
        download_dataset("horse2zebra", to=tmp_path, url=server.url, model="pix2pix")


def test_a_truncated_or_escaping_tar_is_refused(server, tmp_path):
    server.files["/maps.tar.gz"] = dataset_tar("maps")[:200]
    with pytest.raises(DownloadError, match="not a valid .tar.gz"):
        download_dataset("maps", to=tmp_path, url=server.url, show_progress=False, model="pix2pix")
    assert list(tmp_path.iterdir()) == []
    server.files["/night2day.tar.gz"] = dataset_tar("night2day", extra={"../../escaped.txt": b"x"})
    with pytest.raises(DownloadError, match="outside"):
        download_dataset("night2day", to=tmp_path / "d", url=server.url, show_progress=False, model="pix2pix")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "d" / "night2day").exists()


def test_a_pix2pix_zoo_model_becomes_a_pix2pix_checkpoint(server, tmp_path, monkeypatch, capsys):
    from test_pix2pix import OfficialUnet, trained_looking

    monkeypatch.setattr("cyclegan.download.PIX2PIX_PRETRAINED_OPTIONS",
                        {"model": "pix2pix", "netG": "unet_128", "ngf": 4, "norm": "batch", "no_dropout": False,
                         "input_nc": 3, "output_nc": 3})
    official = trained_looking(OfficialUnet(num_downs=7))
    buffer = io.BytesIO()
    torch.save(official.state_dict(), buffer)
    server.files["/sat2map.pth"] = buffer.getvalue()
    monkeypatch.setenv("PIX2PIX_MODEL_URL", server.url)
    assert cli.main(["download", "model", "sat2map", "--model", "pix2pix", "--to", str(tmp_path), "--quiet"]) == 0
    run = tmp_path / "sat2map"
    assert Checkpoint(run).config.model.model == "pix2pix" and Checkpoint(run).config.model.norm == "batch"
    assert Checkpoint(run).config.data.direction == "AtoB"  # maps: A is the aerial photo
    from cyclegan.translate import Translator

    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(Translator.from_checkpoint(run).translate_tensor(x), official(x), atol=1e-5)
    with pytest.raises(DownloadError, match="holds the pix2pix model sat2map already"):
        download_model("sat2map", to=tmp_path, url=server.url, show_progress=False)  # the CycleGAN one
    server.files["/facades_label2photo.pth"] = buffer.getvalue()
    labels = download_model("facades_label2photo", to=tmp_path, url=server.url, show_progress=False, model="pix2pix")
    assert Checkpoint(labels).config.data.direction == "BtoA"  # facades: labels are the right (B) half
    assert cli.main(["download", "model", "edges2cats", "--model", "pix2pix", "--to", str(tmp_path)]) == 2
    assert "valid: facades_label2photo" in capsys.readouterr().err
