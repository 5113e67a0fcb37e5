"""cyclegan serve: the API answers, refuses bad uploads with a 4xx JSON error, and stays up under load."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra: pip install 'cyclegan[serve]' (make test installs it)")
httpx = pytest.importorskip("httpx")

from cyclegan.serve import TranslationService, create_app  # noqa: E402
from cyclegan.run import fit
from cyclegan.training import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY_OPTIONS, write_images
    from cyclegan.config import build_experiment

    root = tmp_path_factory.mktemp("serve")
    write_images(root / "horses" / "trainA", 2, seed=1)
    write_images(root / "horses" / "trainB", 2, seed=2)
    config = build_experiment({**TINY_OPTIONS, "dataroot": str(root / "horses"), "checkpoints_dir": str(root / "runs"),
                               "name": "tiny", "max_iters": 3})
    fit(Trainer(config), show_progress=False)
    return config.run_dir


def png_bytes(width=40, height=30, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def flat_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(run):
    """A real uvicorn server on a free loopback port, in a thread."""
    import uvicorn

    service = TranslationService(run, device="cpu", max_upload_mb=0.05, max_pixels=200 * 200)
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=0, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    port = instance.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def translate(url, data, *, direction="AtoB", filename="x.png"):
    return httpx.post(f"{url}/api/translate", files={"file": (filename, data, "image/png")},
                      data={"direction": direction}, timeout=60)


def test_health_and_model(server):
    assert httpx.get(f"{server}/api/health").json() == {"status": "ok"}
    model = httpx.get(f"{server}/api/model").json()
    assert model["architecture"]["netG"] == "resnet_6blocks" and model["training_data"] == "horses"
    assert model["directions"] == ["AtoB", "BtoA"] and model["epoch"] == 1 and model["iterations"] == 3  # 2 images: 1 epoch done


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_translate_returns_a_png_of_the_input_size(server, direction):
    answer = translate(server, png_bytes(41, 29), direction=direction)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(answer.content)) as out, Image.open(io.BytesIO(png_bytes(41, 29))) as source:
        assert out.size == (41, 29)
        assert np.abs(np.asarray(out, dtype=int) - np.asarray(source, dtype=int)).mean() > 5


@pytest.mark.parametrize("case, status, words", [
    ("too_many_bytes", 413, "MB"),
    ("too_many_pixels", 413, "pixels"),
    ("not_an_image", 415, "not an image"),
    ("truncated", 400, "cannot be decoded"),
    ("empty", 400, "empty"),
    ("bad_direction", 400, "unknown direction"),
    ("tiny", 422, "x.png"),
])
def test_bad_uploads_get_a_clear_4xx(server, case, status, words):
    body, direction = {
        "too_many_bytes": (np.random.default_rng(1).bytes(80_000), "AtoB"),
        "too_many_pixels": (flat_png(300, 300), "AtoB"),  # few bytes, many pixels
        "not_an_image": (b"<html>not a picture</html>", "AtoB"),
        "truncated": (png_bytes(60, 60)[:200], "AtoB"),
        "empty": (b"", "AtoB"),
        "bad_direction": (png_bytes(), "sideways"),
        "tiny": (png_bytes(2, 2), "AtoB"),
    }[case]
    answer = translate(server, body, direction=direction)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]


def test_a_request_without_a_file_is_a_4xx_with_json(server):
    answer = httpx.post(f"{server}/api/translate", data={"direction": "AtoB"})
    assert answer.status_code == 422 and "file" in answer.json()["error"]


def test_twenty_concurrent_requests_are_all_answered(server):
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: translate(server, png_bytes(48, 40, seed=i)), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert httpx.get(f"{server}/api/health").status_code == 200


def test_upload_through_the_page_in_a_real_browser(server, browser, tmp_path):
    source = tmp_path / "horse.png"
    source.write_bytes(png_bytes(52, 36, seed=7))
    page = browser.new_page()
    try:
        page.goto(server + "/", wait_until="load")
        assert "horses" in page.title()
        page.set_input_files("#file", str(source))
        page.select_option("#direction", "AtoB")
        page.click("#go")
        page.wait_for_function("document.getElementById('output').naturalWidth > 0", timeout=60_000)
        size = page.evaluate("[document.getElementById('output').naturalWidth, document.getElementById('output').naturalHeight]")
        assert size == [52, 36]
        # the translated pixels, read back through the download link's blob
        data = page.evaluate("""async () => {
            const blob = await (await fetch(document.getElementById('download').href)).arrayBuffer();
            return Array.from(new Uint8Array(blob));
        }""")
        assert page.get_attribute("#download", "download") == "horse_AtoB.png"
        page.screenshot(path=str(tmp_path / "serve.png"))
    finally:
        page.close()
    with Image.open(io.BytesIO(bytes(data))) as out, Image.open(source) as original:
        assert out.size == original.size
        assert np.abs(np.asarray(out, dtype=int) - np.asarray(original, dtype=int)).mean() > 5
    assert (tmp_path / "serve.png").stat().st_size > 1000


def test_the_page_shows_a_refused_upload_as_an_error(server, browser, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    page = browser.new_page()
    try:
        page.goto(server + "/", wait_until="load")
        page.set_input_files("#file", str(text))
        page.click("#go")
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
        assert "not an image" in page.text_content("#error")
    finally:
        page.close()


def test_serve_command_starts_uvicorn_with_the_app_on_the_given_address(run, monkeypatch):
    import uvicorn

    from cyclegan.cli import main

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    assert main(["serve", "--checkpoint", str(run), "--port", "8123", "--max_upload_mb", "3", "--device", "cpu"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    paths = {route.path for route in started["app"].routes}
    assert {"/", "/api/translate", "/api/health", "/api/model"} <= paths
