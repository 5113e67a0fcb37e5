"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for the tests of ``cyclegan push`` and ``hf://``.

It answers the endpoints huggingface_hub's client calls to create a repository and a branch, to commit a
few small files (every file "regular": base64 in the commit, no LFS or Xet), to list a repository and to
download a file; repositories live in memory. ``HubStandIn.requests`` records (method, path, token) of
every request, so a test can see what the client sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})


def blob_id(content: bytes) -> str:
    """The git blob id of ``content``, as the Hub gives it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubStandIn:
    """``with HubStandIn() as hub:`` serves at ``hub.url`` until the block ends."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HubStandIn":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_files(self, repo_id: str, files: dict[str, bytes], *, branch: str = "main") -> None:
        """Put ``files`` in a repository (created when new) as one commit, as an uploader other than ours would."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.branches.setdefault(branch, {}).update(files)
        self._new_head(repo, branch)

    def _new_head(self, repo: Repo, branch: str) -> str:
        digest = hashlib.sha1(repr(sorted((p, blob_id(c)) for p, c in repo.branches[branch].items())).encode())
        repo.heads[branch] = digest.hexdigest()
        return repo.heads[branch]


def _handler(hub: HubStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # ---- plumbing ----
        def _record(self) -> list[str]:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ") or None
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path, token))
            return [unquote(part) for part in path.strip("/").split("/")]

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload=None, *, headers: dict | None = None, body: bytes | None = None) -> None:
            data = body if body is not None else json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if body is None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            self._send(status, {"error": message}, headers={"X-Error-Code": code, "X-Error-Message": message})

        def _repo(self, owner: str, name: str) -> Repo | None:
            repo = hub.repos.get(f"{owner}/{name}")
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {owner}/{name} not found")
            return repo

        def _files(self, repo: Repo, revision: str) -> dict[str, bytes] | None:
            if revision in repo.branches:
                return repo.branches[revision]
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None

        # ---- GET and HEAD: repository info, tree, files ----
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = self._record()
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                return self._api_get(parts[2], parts[3], parts[4], parts[5])
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(parts[0], parts[1], parts[3], "/".join(parts[4:]))
            self._error(404, "NotFound", f"no route {self.path}")

        def _api_get(self, owner: str, name: str, kind: str, revision: str) -> None:
            repo = self._repo(owner, name)
            files = repo and self._files(repo, revision)
            if files is None:
                return
            if kind == "revision":
                return self._send(200, {"id": f"{owner}/{name}", "modelId": f"{owner}/{name}", "sha": repo.heads[revision],
                                        "private": repo.private, "siblings": [{"rfilename": p} for p in sorted(files)]})
            self._send(200, [{"type": "file", "path": p, "size": len(c), "oid": blob_id(c)} for p, c in sorted(files.items())])

        def _resolve(self, owner: str, name: str, revision: str, path: str) -> None:
            repo = self._repo(owner, name)
            files = repo and self._files(repo, revision)
            if files is None:
                return
            if path not in files:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
            content = files[path]
            self._send(200, body=content, headers={"X-Repo-Commit": repo.heads[revision], "ETag": f'"{blob_id(content)}"',
                                                   "Content-Type": "application/octet-stream"})

        # ---- POST: create, validate, preupload, commit, branch ----
        def do_POST(self) -> None:
            parts, body = self._record(), self._body()
            if parts == ["api", "repos", "create"]:
                return self._create(json.loads(body))
            if parts == ["api", "validate-yaml"]:
                return self._send(200, {"errors": [], "warnings": []})
            if parts[:2] == ["api", "models"] and len(parts) == 6:
                owner, name, action, revision = parts[2:]
                repo = self._repo(owner, name)
                if repo is None:
                    return
                if action == "preupload":
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                       "oid": None} for f in json.loads(body)["files"]]})
                if action == "commit":
                    return self._commit(repo, owner, name, revision, body)
                if action == "branch":
                    if revision in repo.branches:
                        return self._error(409, "BranchExists", f"branch {revision} exists")
                    repo.branches[revision] = dict(repo.branches["main"])
                    repo.heads[revision] = repo.heads["main"]
                    return self._send(200, {})
            self._error(404, "NotFound", f"no route {self.path}")

        def _create(self, payload: dict) -> None:
            repo_id = f"{payload['organization']}/{payload['name']}"
            if repo_id in hub.repos:
                return self._error(409, "RepoExists", "You already created this model repo")
            private = payload.get("private") or payload.get("visibility") == "private"
            hub.repos[repo_id] = Repo(private=bool(private))
            self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _commit(self, repo: Repo, owner: str, name: str, revision: str, body: bytes) -> None:
            files = self._files(repo, revision)
            if files is None:
                return
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    files.pop(item["value"]["path"], None)
                elif item["key"] != "header":
                    return self._error(400, "Unsupported", f"the stand-in takes regular files only, not {item['key']}")
            head = hub._new_head(repo, revision)
            self._send(200, {"commitUrl": f"{hub.url}/{owner}/{name}/commit/{head}", "commitOid": head, "success": True})

    return Handler
