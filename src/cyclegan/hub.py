"""The Hugging Face Hub as transport: ``hf://owner/name[@revision]`` names, fetching files through the Hub's
cache, and uploading a folder as one commit. What goes into a repository is ``sharing``'s.

``huggingface_hub`` is an extra (``pip install 'cyclegan[hub]'``) and is imported only when a Hub name is
used. Its settings are read when a call is made, not when it is imported: ``HF_ENDPOINT`` (a mirror, or a
test's stand-in), ``HF_HUB_OFFLINE`` (the cache only), ``HF_HUB_CACHE`` / ``HF_HOME``. The token is the one
huggingface_hub finds (``HF_TOKEN``, ``hf auth login``); cyclegan never stores one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HF_PREFIX = "hf://"
DEFAULT_REVISION = "main"
# Files of these kinds are pickles: loading them can run code, so they are never read from a repository.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHTS_FILE = "model.safetensors"  # a cyclegan checkpoint without training state: what translation reads
INSTALL_HINT = "pip install 'cyclegan[hub]'"


class HubError(ValueError):
    """A Hub name that cannot be used, or a Hub that cannot be reached; the message says what to do."""


def is_hub_name(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(HF_PREFIX)


@dataclass(frozen=True)
class HubModel:
    """A model repository on the Hub and the revision (branch, tag or commit) to read."""

    repo_id: str
    revision: str = DEFAULT_REVISION

    @classmethod
    def parse(cls, name: str) -> "HubModel":
        """``hf://owner/name`` or ``hf://owner/name@revision``."""
        if not is_hub_name(name):
            raise HubError(f"{name!r} is not a Hub name; write hf://owner/name[@revision]")
        repo_id, _, revision = name[len(HF_PREFIX):].partition("@")
        if not REPO_ID.match(repo_id) or "@" in revision or (revision == "" and name.endswith("@")):
            raise HubError(f"{name!r} is not a Hub name; write hf://owner/name[@revision], e.g. hf://alice/horse2zebra")
        return cls(repo_id, revision or DEFAULT_REVISION)

    def __str__(self) -> str:
        return HF_PREFIX + self.repo_id + self._revision_suffix

    @property
    def folder_name(self) -> str:
        """A local folder name for what is made from this model (test pages, evaluations, converted engines)."""
        return self.repo_id.replace("/", "--") + self._revision_suffix

    @property
    def _revision_suffix(self) -> str:
        return f"@{self.revision}" if self.revision != DEFAULT_REVISION else ""


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id):
        raise HubError(f"--repo {repo_id!r} is not a repository name; write owner/name, e.g. alice/horse2zebra")
    return repo_id


def client():
    """The huggingface_hub module, or a HubError that says how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"Hub models need huggingface_hub: {INSTALL_HINT}") from None
    return huggingface_hub


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None


def api():
    return client().HfApi(endpoint=endpoint())


def repo_files(model: HubModel) -> list[str]:
    """Every file of the repository at the revision (online only)."""
    return _translated(lambda: api().list_repo_files(model.repo_id, revision=model.revision), model)


def fetch_file(model: HubModel, filename: str) -> Path:
    """``filename`` of the repository, through the Hub's cache; offline, from the cache alone."""
    hub = client()
    call = lambda: hub.hf_hub_download(model.repo_id, filename, revision=model.revision, endpoint=endpoint(),  # noqa: E731
                                       cache_dir=cache_dir(), local_files_only=offline())
    return Path(_translated(call, model, filename))


def fetch_checkpoint(name: str) -> Path:
    """The weights file of the cyclegan model ``hf://owner/name[@revision]``, in the Hub's cache. Online, the
    repository is listed first, so that a repository of pickles is refused before anything is downloaded."""
    model = HubModel.parse(name)
    if not offline():
        files = repo_files(model)
        if WEIGHTS_FILE not in files:
            refuse_pickles(model, files, WEIGHTS_FILE)
    return fetch_file(model, WEIGHTS_FILE)


def refuse_pickles(model: HubModel, files: list[str], wanted: str) -> None:
    """A repository without ``wanted`` whose weights are pickles is refused, saying so."""
    pickles = [name for name in files if name.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise HubError(f"{model} holds pickled weights ({', '.join(pickles[:3])}), not {wanted}: cyclegan reads only "
                       f"safetensors and JSON from a repository, since loading a pickle can run code. For official "
                       f".pth weights use: cyclegan download model NAME --from hf --repo {model.repo_id}")
    raise HubError(f"{model} has no {wanted}; it holds {', '.join(files) or 'no files'}. Is it a cyclegan model "
                   f"(cyclegan push writes {wanted})?")


def upload_folder(folder: Path, repo_id: str, *, private: bool, revision: str, message: str) -> str:
    """Create the repository (and the branch) when missing, then commit every file of ``folder``; the commit's URL."""
    hub_api = api()
    model = HubModel(repo_id, revision)

    def upload() -> str:
        hub_api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != DEFAULT_REVISION:
            hub_api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = hub_api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision, commit_message=message)
        return str(getattr(info, "commit_url", info))

    return _translated(upload, model)


def _translated(call, model: HubModel, filename: str | None = None):
    """Run a huggingface_hub call; its errors become HubErrors that name the model and say what to do."""
    errors = client().errors
    what = f"{filename} of {model}" if filename else str(model)
    try:
        return call()
    except errors.LocalEntryNotFoundError:
        if offline():
            raise HubError(f"{what} is not in the Hub cache and HF_HUB_OFFLINE is set: fetch it once online "
                           f"(unset HF_HUB_OFFLINE), or use a local run folder") from None
        raise HubError(f"cannot reach the Hub for {what}, and it is not in the cache; check the connection "
                       f"(HF_ENDPOINT={endpoint() or 'the default'})") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{model.repo_id} has no revision {model.revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"no model repository {model.repo_id} on the Hub (or it is private and the token, from "
                       f"HF_TOKEN or hf auth login, cannot read it)") from None
    except errors.EntryNotFoundError:
        raise HubError(f"{model} has no file {filename}") from None
    except errors.HfHubHTTPError as exc:
        raise HubError(f"the Hub refused a request for {what}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        if not type(exc).__module__.startswith(("httpx", "httpcore")) and not isinstance(exc, OSError):
            raise
        # connection refused, DNS, timeouts: the HTTP client's transport errors
        raise HubError(f"cannot reach the Hub for {what} ({exc}); set HF_HUB_OFFLINE=1 to use the cache") from None
