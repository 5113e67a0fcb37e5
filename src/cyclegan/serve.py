"""``cyclegan serve``: a web page and a small JSON/PNG API that translate uploaded images.

FastAPI + uvicorn (the optional extra ``serve``). Requests are answered in worker threads; the
model runs one image at a time behind a lock, so concurrent requests queue instead of competing
for memory. Bad uploads (too large, too many pixels, not an image, an unknown direction) get a
4xx answer with a JSON ``{"error": ...}`` that says what is wrong.
"""

import io
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from .checkpoint import Checkpoint, generator_name
from .images import ImageReadError, open_image, peek_size
from .rasters import Bands, RasterError, encode as encode_raster
from .names import GENERATOR_FOR_DIRECTION
from .tiling import TileOptions
from .translate import Translator

MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file in an upload's body


class UploadProblem(Exception):
    """A request the server refuses: the HTTP status and the message for the JSON answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class TranslationService:
    """The translators of one checkpoint, the upload limits, and the lock that serialises the model."""

    def __init__(self, checkpoint: str | Path, *, device: str | None = None, max_upload_mb: float = 20.0,
                 max_pixels: int = 16_000_000, tiles: TileOptions = TileOptions(), engine: str = "torch",
                 precision: str = "fp32", train_mode: bool = False):
        self.checkpoint = Checkpoint(checkpoint)
        self.translators = {
            direction: Translator.on_engine(self.checkpoint, direction, engine=engine, precision=precision,
                                            device=device, tiles=tiles, train_mode=train_mode)
            for direction in GENERATOR_FOR_DIRECTION if self.checkpoint.has_generator(direction)}
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_pixels = max_pixels
        self.lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """GET /api/model: the architecture, what it was trained on, and how far."""
        config, info = self.checkpoint.config, self.checkpoint.info
        m = config.model
        return {
            "name": config.name,
            "checkpoint": self.checkpoint.path.name,
            "directions": list(self.translators),
            "generators": {d: generator_name(self.checkpoint, d) for d in self.translators},
            "model": m.model,
            "architecture": {"netG": m.netG, "ngf": m.ngf, "norm": m.norm, "upsample": m.upsample,
                             "global_residual": m.global_residual, "colour_path": m.colour_path,
                             "colour_transfer_start": m.colour_transfer_start,
                             "input_nc": m.input_nc, "output_nc": m.output_nc},
            "training_data": Path(config.data.dataroot).name,
            "recipe": config.train.recipe,
            "epoch": max(0, int(info.get("epoch", 1)) - 1),
            "iterations": info.get("total_iters"),
            "limits": {"max_upload_mb": self.max_upload_bytes / 1024 / 1024, "max_pixels": self.max_pixels},
        }

    def decode(self, data: bytes, filename: str) -> Image.Image | Bands:
        """The uploaded bytes as an image, refusing what is too big or not an image."""
        if not data:
            raise UploadProblem(400, f"{filename}: the upload is empty")
        if len(data) > self.max_upload_bytes:
            raise UploadProblem(413, f"{filename}: {len(data) / 1024 / 1024:.1f} MB is more than the "
                                     f"{self.max_upload_bytes / 1024 / 1024:g} MB this server accepts (--max_upload_mb)")
        try:
            width, height = peek_size(data)  # from the header: checked before anything is decoded
        except ImageReadError as exc:
            raise UploadProblem(415, f"{filename} is not an image this server can read: {exc.__cause__ or exc}") from None
        if width * height > self.max_pixels:
            raise UploadProblem(413, f"{filename}: {width}x{height} is {width * height:,} pixels, more than the "
                                     f"{self.max_pixels:,} this server accepts (--max_pixels)")
        try:
            return open_image(data, name=filename)
        except ImageReadError as exc:  # truncated or corrupt data
            raise UploadProblem(400, f"{filename} cannot be decoded: {exc.__cause__ or exc}") from None

    def translate(self, data: bytes, filename: str, direction: str) -> tuple[bytes, str]:
        """(the translation's file bytes, their format: "png", or "tiff" for what PNG cannot hold) of an
        uploaded image."""
        if direction not in self.translators:
            raise UploadProblem(400, f"unknown direction {direction!r}; this model translates: {', '.join(self.translators)}")
        image = self.decode(data, filename)
        try:
            with self.lock:
                result = self.translators[direction](image)
        except ValueError as exc:  # e.g. an image smaller than the network's stride
            raise UploadProblem(422, f"{filename}: {exc}") from None
        if isinstance(result, Bands):
            try:
                return encode_raster(result, "PNG"), "png"
            except RasterError:
                return encode_raster(result, "TIFF"), "tiff"
        buffer = io.BytesIO()
        result.save(buffer, format="PNG")
        return buffer.getvalue(), "png"


def create_app(service: TranslationService):
    """The FastAPI application: the page at /, and /api/translate, /api/health, /api/model."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="cyclegan", docs_url="/api/docs", redoc_url=None)

    @app.middleware("http")
    async def refuse_oversized_bodies(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > service.max_upload_bytes + MULTIPART_SLACK:
            mb = service.max_upload_bytes / 1024 / 1024
            return JSONResponse({"error": f"the upload ({int(declared) / 1024 / 1024:.1f} MB) is more than the {mb:g} MB "
                                          "this server accepts (--max_upload_mb)"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(UploadProblem)
    async def upload_problem(request: Request, exc: UploadProblem):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, exc: RequestValidationError):
        missing = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors())
        return JSONResponse({"error": f"bad request ({missing}): send the image as multipart/form-data field 'file' "
                                      "(and optionally 'direction': AtoB or BtoA)"}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html(service.describe())

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    def model() -> dict:
        return service.describe()

    @app.post("/api/translate")
    def translate(file: UploadFile = File(...), direction: str = Form("AtoB")) -> Response:
        data = file.file.read(service.max_upload_bytes + 1)
        body, kind = service.translate(data, file.filename or "upload", direction)
        name = f"{Path(file.filename or 'image').stem}_{direction}.{'tif' if kind == 'tiff' else kind}"
        return Response(body, media_type=f"image/{kind}", headers={"Content-Disposition": f'inline; filename="{name}"'})

    return app


def serve(checkpoint: str | Path, *, host: str = "127.0.0.1", port: int = 8000, device: str | None = None,
          max_upload_mb: float = 20.0, max_pixels: int = 16_000_000, tiles: TileOptions = TileOptions(),
          engine: str = "torch", precision: str = "fp32", train_mode: bool = False) -> None:
    """Run the server until interrupted."""
    import uvicorn

    service = TranslationService(checkpoint, device=device, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                                 tiles=tiles, engine=engine, precision=precision, train_mode=train_mode)
    print(f"cyclegan serve: {service.checkpoint.path} ({', '.join(service.translators)}) at http://{host}:{port}/")
    uvicorn.run(create_app(service), host=host, port=port, log_level="info")


def page_html(model: dict) -> str:
    """The upload page: pick or drop an image, choose the direction, see both side by side."""
    options = "".join(f'<option value="{d}">{d}</option>' for d in model["directions"])
    title = f"cyclegan: {model['name']} ({model['training_data'] or 'model'}, epoch {model['epoch']})"
    return PAGE.replace("__TITLE__", _escape(title)).replace("__OPTIONS__", options)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: sans-serif; margin: 2em; }
#drop { border: 2px dashed #888; padding: 2em; text-align: center; margin-bottom: 1em; }
#drop.over { background: #eef; }
.pair { display: flex; gap: 2em; flex-wrap: wrap; }
.pair figure { margin: 0; }
.pair img { max-width: 45vw; max-height: 70vh; border: 1px solid #ccc; }
#error { color: #b00; white-space: pre-wrap; }
</style></head>
<body>
<h1>__TITLE__</h1>
<form id="form">
  <div id="drop">Drop an image here, or <input type="file" id="file" name="file" accept="image/*"></div>
  <label>Direction <select id="direction" name="direction">__OPTIONS__</select></label>
  <button type="submit" id="go">Translate</button>
  <span id="status"></span>
</form>
<p id="error"></p>
<div class="pair">
  <figure><figcaption>input</figcaption><img id="input" alt="input"></figure>
  <figure><figcaption>translated <a id="download" download="translated.png" hidden>download</a></figcaption>
  <img id="output" alt="translated"></figure>
</div>
<script>
const form = document.getElementById("form"), fileInput = document.getElementById("file");
const drop = document.getElementById("drop"), status = document.getElementById("status");
const error = document.getElementById("error"), download = document.getElementById("download");
let chosen = null;
function choose(file) {
  chosen = file;
  document.getElementById("input").src = URL.createObjectURL(file);
  error.textContent = "";
}
fileInput.addEventListener("change", () => { if (fileInput.files.length) choose(fileInput.files[0]); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0]);
});
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!chosen) { error.textContent = "Choose an image first."; return; }
  const body = new FormData();
  body.append("file", chosen);
  body.append("direction", document.getElementById("direction").value);
  status.textContent = "translating...";
  error.textContent = "";
  try {
    const answer = await fetch("/api/translate", { method: "POST", body });
    if (!answer.ok) {
      let message = answer.status + " " + answer.statusText;
      try { message = (await answer.json()).error; } catch (ignored) {}
      throw new Error(message);
    }
    const url = URL.createObjectURL(await answer.blob());
    document.getElementById("output").src = url;
    download.href = url;
    download.download = chosen.name.replace(/\\.[^.]*$/, "") + "_" + document.getElementById("direction").value + ".png";
    download.hidden = false;
    status.textContent = "done";
  } catch (problem) {
    status.textContent = "";
    error.textContent = problem.message;
  }
});
</script>
</body></html>
"""
