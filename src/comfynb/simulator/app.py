"""The simulator's aiohttp application: ComfyUI's routes (each also under ``/api``), ``/ws``, ``/_sim/*``.

``Server`` holds everything one simulated ComfyUI has (engine, sockets, faults, prompt log)
and builds the ``aiohttp.web.Application`` that serves it; ``Simulator`` runs it on a thread.

Example::

    server = Server(root=Path("sim"), version="0.8.0")
    app = server.make_app()   # then serve it with aiohttp's AppRunner / web.run_app
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import ipaddress
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from PIL import Image

from . import specs as _specs
from . import validation as _validation
from .engine import HISTORY_LIMIT, Engine, Task, now_ms
from .faults import INTERNAL_ERROR_TEXT, Faults
from .hub import Hub, Socket
from .jobs import JobQueryError, find_job, list_jobs

__all__ = ["Server"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Json = dict[str, Any]

_SECRET_KEYS = ("api_key_comfy_org", "auth_token_comfy_org")
_FOLDER_TYPES = ("input", "output", "temp")
_MAX_UPLOAD = 104857600
# GET /models of the captured server (folder_paths' names).
_MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)


def _internal_error() -> web.Response:
    return web.Response(status=500, text=INTERNAL_ERROR_TEXT)


def _empty(status: int = 200) -> web.Response:
    return web.Response(status=status)


class Server:
    """One simulated ComfyUI server: its state and its aiohttp application."""

    def __init__(
        self,
        root: Path,
        *,
        version: str = _specs.DEFAULT_VERSION,
        seed: int = 0,
        node_seconds: float = 0.0,
        step_seconds: float = 0.0,
        faults: Json | None = None,
        checkpoints: Sequence[str] | None = None,
    ) -> None:
        if version not in _specs.SERVER_VERSIONS:
            raise ValueError(
                f"unknown ComfyUI version {version!r}; use one of {_specs.SERVER_VERSIONS}"
            )
        self.root = Path(root)
        self.version = version
        self.seed = seed
        self.faults = Faults(seed)
        if faults:
            self.faults.set(faults)
        self._node_seconds = node_seconds
        self._step_seconds = step_seconds
        self.hub: Hub | None = None
        self.engine: Engine | None = None
        self.number = 0
        self.prompt_log: dict[str, Json] = {}
        self._posted_in: dict[str, int] = {}  # prompt_id -> the engine life of its last POST
        self._specs_cache: dict[str, dict[str, Json]] = {}
        #: the checkpoint files this server "has" (``ckpt_name``'s choices, ``/models/checkpoints``)
        self.checkpoints: tuple[str, ...] = (
            _specs.CHECKPOINTS if checkpoints is None else tuple(checkpoints)
        )

    # -- life cycle (on the event loop) -------------------------------------------------------

    async def startup(self) -> None:
        """Create folders, delete temp files (as ComfyUI does at start), start hub and executor."""
        loop = asyncio.get_running_loop()
        self._clear_folder("temp")
        self.hub = Hub(loop)
        self.hub.start()
        self.engine = Engine(
            self.root,
            self.hub,
            faults=self.faults,
            version=self.version,
            node_seconds=self._node_seconds,
            step_seconds=self._step_seconds,
        )
        self.engine.start()

    async def shutdown(self) -> None:
        if self.engine is not None:
            # Blocking the loop here is fine (the executor never waits for it), and no worker
            # thread is needed: this also runs from atexit, when none can be started.
            self.engine.stop()
        if self.hub is not None:
            await self.hub.stop()

    def _clear_folder(self, kind: str) -> None:
        folder = self.root / kind
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)

    async def restart(self) -> None:
        """Forget queue, history and the running prompt; drop every socket (crash + restart)."""
        assert self.engine is not None and self.hub is not None
        await asyncio.to_thread(self.engine.forget)
        self._clear_folder("temp")
        await self.hub.close_all()

    async def reset(self, version: str | None = None) -> None:
        """Empty everything a test can see: queue, history, cache, faults, prompt log, files.

        The per-node and per-step times return to the start values; the version changes only
        when given.
        """
        await self.restart()
        self.faults.set({})
        self.prompt_log.clear()
        self._posted_in.clear()
        self.number = 0
        self._engine().history_limit = HISTORY_LIMIT
        for kind in _FOLDER_TYPES:
            self._clear_folder(kind)
        # Times go back to what the server was started with (fast by default).
        self.configure(
            version=version,
            node_seconds=self._node_seconds,
            node_seconds_by_id={},
            step_seconds=self._step_seconds,
        )

    def configure(
        self,
        *,
        node_seconds: float | None = None,
        node_seconds_by_id: dict[str, float] | None = None,
        step_seconds: float | None = None,
        version: str | None = None,
    ) -> Json:
        """Change per-node time (all nodes, or by node id), per-step time or the server version.

        Returns the whole configuration. A node waiting right now re-decides with new times.
        """
        assert self.engine is not None
        if version is not None:
            if version not in _specs.SERVER_VERSIONS:
                raise ValueError(f"unknown ComfyUI version {version!r}")
            self.version = version
            self.engine.version = version
        if node_seconds is not None or node_seconds_by_id is not None:
            if node_seconds_by_id is not None and not isinstance(node_seconds_by_id, dict):
                raise ValueError("node_seconds_by_id must map node ids to seconds")
            self.engine.set_node_seconds(
                None if node_seconds is None else float(node_seconds), node_seconds_by_id
            )
        if step_seconds is not None:
            self.engine.step_seconds = float(step_seconds)
        return self.config()

    def config(self) -> Json:
        assert self.engine is not None
        return {
            "node_seconds": self.engine.node_seconds,
            "node_seconds_by_id": dict(self.engine.node_seconds_by_id),
            "step_seconds": self.engine.step_seconds,
            "version": self.version,
        }

    # -- the application ------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=_MAX_UPLOAD,
            middlewares=[self._error_middleware, self._origin_middleware, self._fault_middleware],
        )
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self.ws),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/prompt", self.get_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_entry),
            ("POST", "/history", self.post_history),
            ("GET", "/api/jobs", self.get_jobs),
            ("GET", "/api/jobs/{job_id}", self.get_job),
            ("POST", "/api/jobs/cancel", self.cancel_jobs),
            ("POST", "/api/jobs/{job_id}/cancel", self.cancel_job),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_class),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("POST", "/free", self.free),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/models", self.models),
            ("GET", "/models/{folder}", self.model_files),
            ("GET", "/extensions", self.extensions),
        ]
        for prefix in ("/api", ""):
            for method, path, handler in routes:
                # GET routes also answer HEAD, as aiohttp's RouteTableDef.get gives ComfyUI's.
                app.router.add_route(method, prefix + path, handler)
                if method == "GET" and path != "/ws":
                    app.router.add_route("HEAD", prefix + path, handler)
        # /internal/* has no /api twin on the real server.
        app.router.add_get("/internal/files/{directory_type}", self.internal_files)
        app.router.add_get("/_sim/prompts", self.sim_prompts)
        app.router.add_get("/_sim/faults", self.sim_get_faults)
        app.router.add_post("/_sim/faults", self.sim_set_faults)
        app.router.add_post("/_sim/restart", self.sim_restart)
        app.router.add_get("/_sim/config", self.sim_get_config)
        app.router.add_post("/_sim/config", self.sim_set_config)
        app.router.add_post("/_sim/reset", self.sim_reset)
        # The real server serves its frontend as static files at "/": an unknown path is a
        # static 404 (empty body, application/octet-stream), not aiohttp's text 404.
        app.router.add_get("/", self.index)
        app.router.add_get("/{tail:.*}", self.static_not_found)
        return app

    @web.middleware
    async def _error_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Any exception in a handler becomes ComfyUI's (aiohttp's) text/plain 500.
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            return _internal_error()

    @web.middleware
    async def _origin_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if _foreign_origin(request.headers.get("Host"), request.headers.get("Origin")):
            return _empty(403)
        return await handler(request)

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.faults.http_fault(request.path)
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.error:
            return _internal_error()
        response = await handler(request)
        if fault.reset and request.transport is not None:
            # The request was handled; the answer is lost with the connection.
            request.transport.abort()
        return response

    def _engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def _specs(self) -> dict[str, Json]:
        cached = self._specs_cache.get(self.version)
        if cached is None:
            cached = self._specs_cache[self.version] = _specs.object_info(
                self.version, checkpoints=self.checkpoints
            )
        return cached

    # -- /ws --------------------------------------------------------------------------------------

    async def ws(self, request: web.Request) -> web.StreamResponse:
        hub = self.hub
        assert hub is not None
        ws = web.WebSocketResponse(max_msg_size=0, compress=False, timeout=2.0)
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        sock = Socket(ws, transport=request.transport)
        hub.sockets[sid] = sock  # replaces an older socket with this id: it gets nothing more
        queue_info = {"exec_info": {"queue_remaining": self._engine().queue_remaining()}}
        hub.send_now(sock, "status", {"status": queue_info, "sid": sid})
        client_id, last_node = self._engine().running_prompt()
        if client_id == sid and last_node is not None:
            hub.send_now(sock, "executing", {"node": last_node})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_client_message(sock, sid, msg.data)
        finally:
            # ComfyUI forgets the id when a socket ends, even if a newer socket took it over
            # (fact sheet, socket identity); sockets the server itself dropped were removed already.
            if not sock.dropped:
                hub.sockets.pop(sid, None)
        return ws

    def _on_client_message(self, sock: Socket, sid: str, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "feature_flags":
            return
        data = message.get("data")
        sock.metadata = isinstance(data, dict) and data.get("supports_preview_metadata") is True
        assert self.hub is not None
        self.hub.send_now(sock, "feature_flags", self._features())

    # -- /prompt ----------------------------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"exec_info": {"queue_remaining": self._engine().queue_remaining()}}
        )

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        number = self._number(body)
        if not isinstance(body, dict) or "prompt" not in body:
            message = "No prompt provided"
            error = {"type": "no_prompt", "message": message, "details": message, "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return _internal_error()
        prompt_id, id_error = self._prompt_id(body)
        if id_error is not None:
            return web.json_response({"error": id_error, "node_errors": {}}, status=400)
        targets = body.get("partial_execution_targets")
        checked = _validation.validate_prompt(
            prompt,
            self._specs(),
            version=self.version,
            input_exists=self._input_exists,
            partial_execution_targets=targets if isinstance(targets, list) else None,
        )
        if checked.error is not None:
            return web.json_response(
                {"error": checked.error, "node_errors": checked.node_errors}, status=400
            )
        extra_data = self._extra_data(body)
        task = Task(number, prompt_id, prompt, extra_data, list(checked.outputs))
        life = self._engine().submit(task)
        self._log_prompt(prompt_id, number, life)
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": checked.node_errors}
        )

    def _number(self, body: Any) -> float:
        if isinstance(body, dict) and "number" in body:
            return float(body["number"])
        number: float = self.number
        if isinstance(body, dict) and body.get("front"):
            number = -number
        self.number += 1
        return number

    def _prompt_id(self, body: Json) -> tuple[str, Json | None]:
        if "prompt_id" not in body or body["prompt_id"] is None:
            return str(uuid.uuid4()), None
        given = body["prompt_id"]
        if self.version == "0.8.0":
            return str(given), None
        if isinstance(given, str) and _is_canonical_uuid(given):
            return given, None
        message = "prompt_id must be a valid UUID"
        error = {
            "type": "invalid_prompt_id",
            "message": message,
            "details": f"Invalid prompt_id: {given!r}",
            "extra_info": {},
        }
        return "", error

    def _extra_data(self, body: Json) -> Json:
        given = body.get("extra_data")
        extra = (
            {k: v for k, v in given.items() if k not in _SECRET_KEYS}
            if isinstance(given, dict)
            else {}
        )
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        extra["create_time"] = now_ms()
        return extra

    def _log_prompt(self, prompt_id: str, number: float, life: int) -> None:
        """Count one accepted POST of ``prompt_id``, and the server lives it was posted in.

        ``life``: the engine's life the prompt was queued in. A restart forgets every prompt,
        so a client may then post a prompt_id again that the server took before it: ``posts``
        counts that POST, ``lives`` tells it from a prompt queued twice in one life.
        """
        row = self.prompt_log.get(prompt_id)
        if row is None:
            self.prompt_log[prompt_id] = {
                "prompt_id": prompt_id,
                "number": number,
                "time": time.time(),
                "posts": 1,
                "lives": 1,
            }
        else:
            row["posts"] += 1
            if self._posted_in.get(prompt_id) != life:
                row["lives"] += 1
        self._posted_in[prompt_id] = life

    def _input_exists(self, name: str) -> bool:
        path = self._annotated_path(name, "input")
        return path is not None and path.is_file()

    def _annotated_path(self, name: str, default_type: str) -> Path | None:
        kind = default_type
        for candidate in _FOLDER_TYPES:
            suffix = f" [{candidate}]"
            if name.endswith(suffix):
                name, kind = name[: -len(suffix)], candidate
                break
        base = (self.root / kind).resolve()
        path = (base / name).resolve()
        return path if path.is_relative_to(base) else None

    # -- /queue, /interrupt, /history -------------------------------------------------------------

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self._engine().queue()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self._engine().clear_pending()
        if "delete" in body:
            self._engine().delete_pending(list(body["delete"]))
        return _empty()

    async def post_interrupt(self, request: web.Request) -> web.Response:
        body: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        self._engine().interrupt(None if prompt_id is None else str(prompt_id))
        return _empty()

    async def get_history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query.get("offset", -1))
        return web.json_response(_history_slice(self._engine().history(), max_items, offset))

    async def get_history_entry(self, request: web.Request) -> web.Response:
        return web.json_response(self._engine().history_entry(request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self._engine().clear_history()
        if "delete" in body:
            self._engine().delete_history(list(body["delete"]))
        return _empty()

    # -- /api/jobs --------------------------------------------------------------------------------

    async def get_jobs(self, request: web.Request) -> web.Response:
        running, pending, history = self._engine().snapshot()
        try:
            body = list_jobs(
                request.rel_url.query, running, pending, history, newer=self.version != "0.8.0"
            )
        except JobQueryError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(body)

    async def get_job(self, request: web.Request) -> web.Response:
        running, pending, history = self._engine().snapshot()
        job = find_job(
            request.match_info["job_id"], running, pending, history, newer=self.version != "0.8.0"
        )
        if job is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(job)

    async def cancel_job(self, request: web.Request) -> web.Response:
        if self.version == "0.8.0":
            raise web.HTTPNotFound()
        return web.json_response({"cancelled": self._cancel(request.match_info["job_id"])})

    async def cancel_jobs(self, request: web.Request) -> web.Response:
        if self.version == "0.8.0":
            raise web.HTTPNotFound()
        body = await request.json()
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            return web.json_response({"error": "job_ids must be a list"}, status=400)
        bad = [job_id for job_id in ids if not (isinstance(job_id, str) and _is_uuid(job_id))]
        if bad:
            return web.json_response({"error": f"Invalid job id: {bad[0]}"}, status=400)
        return web.json_response({"cancelled": [job_id for job_id in ids if self._cancel(job_id)]})

    def _cancel(self, job_id: str) -> bool:
        engine = self._engine()
        running, pending = engine.queue()
        if any(item[1] == job_id for item in pending):
            engine.delete_pending([job_id])
            return True
        if any(item[1] == job_id for item in running):
            return engine.interrupt(job_id)
        return False

    # -- files ------------------------------------------------------------------------------------

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return _empty(404)
        filename, kind = _split_annotation(query["filename"])
        if not filename or filename[0] == "/" or ".." in filename:
            return _empty(400)
        kind = kind or query.get("type", "output")
        if kind not in _FOLDER_TYPES:
            return _empty(400)
        base = os.path.abspath(self.root / kind)
        folder = base
        if "subfolder" in query:
            folder = os.path.join(base, query["subfolder"])
            if os.path.commonpath((os.path.abspath(folder), base)) != base:
                return _empty(403)
        filename = os.path.basename(filename)
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            return _empty(404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        converted = "preview" in query or query.get("channel") in ("rgb", "a")
        truncated = self.faults.take_truncate_view()
        if not converted and not truncated:
            return web.FileResponse(path, headers=disposition)
        if converted:
            body, content_type = await asyncio.to_thread(_converted, path, query)
        else:
            body, content_type = Path(path).read_bytes(), "image/png"
        if truncated:  # the fault: half the body, with a Content-Length that matches the cut
            body = body[: len(body) // 2]
        return web.Response(body=body, content_type=content_type, headers=disposition)

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if image is None or not isinstance(image, web.FileField) or not image.filename:
            return _empty(400)
        kind = str(post.get("type") or "input")
        if kind not in _FOLDER_TYPES:
            kind = "input"
        base = os.path.abspath(self.root / kind)
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(base, os.path.normpath(subfolder))
        filename = image.filename
        if os.path.isabs(filename):
            return _internal_error()  # as observed: an absolute file name fails with a 500
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((base, path)) != base:
            return _empty(400)
        overwrite = str(post.get("overwrite", "")) in ("true", "1")
        data = image.file.read()
        name = await asyncio.to_thread(_store_upload, folder, filename, data, overwrite)
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    # -- server info ------------------------------------------------------------------------------

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            _specs.object_info(
                self.version, input_files=self._input_files(), checkpoints=self.checkpoints
            )
        )

    async def object_info_class(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = _specs.object_info(
            self.version, input_files=self._input_files(), checkpoints=self.checkpoints
        )
        return web.json_response({name: info[name]} if name in info else {})

    def _input_files(self) -> list[str]:
        folder = self.root / "input"
        return [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._system_stats())

    def _system_stats(self) -> Json:
        total, free = 25276063744, 24186871808
        system: Json = {
            "os": "linux",
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": self.version,
            "required_frontend_version": "1.35.9" if self.version == "0.8.0" else "1.49.6",
            "installed_templates_version": "0.7.67",
            "required_templates_version": "0.7.67",
            "python_version": sys.version,
            "pytorch_version": "2.14.1+cpu",
            "embedded_python": False,
            "argv": ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", "8188"],
        }
        if self.version != "0.8.0":
            system["comfy_package_versions"] = [
                {"name": "comfyui-frontend-package", "installed": "1.49.6", "required": "1.49.6"},
                {"name": "comfyui-workflow-templates", "installed": "0.7.67", "required": "0.7.67"},
            ]
            system["deploy_environment"] = "local"
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": total,
            "torch_vram_free": free,
        }
        return {"system": system, "devices": [device]}

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(self._features())

    def _features(self) -> Json:
        out: Json = {
            "supports_preview_metadata": True,
            "max_upload_size": _MAX_UPLOAD,
            "extension": {"manager": {"supports_v4": True}},
        }
        if self.version != "0.8.0":
            out["supports_model_type_tags"] = True
            out["node_replacements"] = True
            out["assets"] = False
        return out

    async def free(self, request: web.Request) -> web.Response:
        await request.json()
        return _empty()

    async def embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(list(_MODEL_FOLDERS))

    async def model_files(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in _MODEL_FOLDERS:
            return _empty(404)
        return web.json_response(list(self.checkpoints) if folder == "checkpoints" else [])

    async def extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def internal_files(self, request: web.Request) -> web.Response:
        kind = request.match_info["directory_type"]
        if kind not in _FOLDER_TYPES:
            return web.json_response({"error": "Invalid directory type"}, status=400)
        folder = self.root / kind
        files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        files.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)  # newest first
        return web.json_response([p.name for p in files])

    async def index(self, request: web.Request) -> web.Response:
        html = "<!doctype html><title>comfynb simulator</title><p>A simulated ComfyUI server."
        return web.Response(text=html, content_type="text/html")

    async def static_not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, body=b"", content_type="application/octet-stream")

    # -- /_sim ------------------------------------------------------------------------------------

    async def sim_prompts(self, request: web.Request) -> web.Response:
        return web.json_response({"prompts": list(self.prompt_log.values())})

    async def sim_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.active())

    async def sim_set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            if not isinstance(body, dict):
                raise ValueError("the fault set must be a JSON object ({} clears it)")
            return web.json_response(self.faults.set(body))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def sim_restart(self, request: web.Request) -> web.Response:
        await self.restart()
        return web.json_response({"restarted": True})

    async def sim_get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config())

    async def sim_set_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            return web.json_response(self.configure(**_config_args(body)))
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def sim_reset(self, request: web.Request) -> web.Response:
        body: Any = {}
        if request.can_read_body:
            body = await request.json()
        version = body.get("version") if isinstance(body, dict) else None
        await self.reset(version)
        return web.json_response(self.config())


def _config_args(body: Any) -> Json:
    if not isinstance(body, dict):
        raise ValueError("config must be an object")
    unknown = set(body) - {"node_seconds", "node_seconds_by_id", "step_seconds", "version"}
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}")
    return dict(body)


def _history_slice(history: Json, max_items: int | None, offset: int) -> Json:
    """ComfyUI's ``get_history`` paging: the newest N, or N starting at ``offset``."""
    if offset < 0 and max_items is not None:
        offset = len(history) - max_items
    out: Json = {}
    for index, (key, entry) in enumerate(history.items()):
        if index >= offset:
            out[key] = entry
            if max_items is not None and len(out) >= max_items:
                break
    return out


def _is_canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _split_annotation(name: str) -> tuple[str, str | None]:
    for kind in _FOLDER_TYPES:
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, None


def _converted(path: str, query: Any) -> tuple[bytes, str]:
    """``/view`` with ``preview=`` (webp/jpeg) or ``channel=`` (rgb/a), as ComfyUI converts."""
    channel = query.get("channel", "")
    buffer = io.BytesIO()
    with Image.open(path) as img:
        if "preview" in query:
            parts = query["preview"].split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            out = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
            out.save(buffer, format=fmt, quality=quality)
            return buffer.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _store_upload(folder: str, filename: str, data: bytes, overwrite: bool) -> str:
    """Write an upload: same name + same bytes keeps the name, other bytes get ``name (1).png``."""
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    name = filename
    path = os.path.join(folder, name)
    counter = 1
    while not overwrite and os.path.exists(path):
        if _same_bytes(path, data):
            return name
        name = f"{stem} ({counter}){ext}"
        path = os.path.join(folder, name)
        counter += 1
    with open(path, "wb") as handle:  # a directory in the name that does not exist: 500
        handle.write(data)
    return name


def _same_bytes(path: str, data: bytes) -> bool:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).digest() == hashlib.sha256(data).digest()


def _foreign_origin(host: str | None, origin: str | None) -> bool:
    """ComfyUI's CSRF guard: on a loopback Host, an Origin naming another host:port is refused."""
    if not host or not origin:
        return False
    host_domain = host.lower()
    parsed = urlsplit(origin)
    origin_domain = parsed.netloc.lower()
    host_parsed = urlsplit("//" + host_domain)
    if not _is_loopback(host_parsed.hostname):
        return False
    try:
        if parsed.port is None:
            host_domain = host_parsed.hostname or ""
        if host_parsed.port is None:
            origin_domain = parsed.hostname or ""
    except ValueError:
        return True
    return bool(host_domain) and bool(origin_domain) and host_domain != origin_domain


def _is_loopback(hostname: str | None) -> bool:
    if not hostname:
        return False
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
