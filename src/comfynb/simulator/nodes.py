"""The node implementations the simulator runs: ComfyUI's model-free image nodes done with
pillow, and simulated model nodes that paint a deterministic picture.

Values that travel along links:

* ``IMAGE``: a tuple of RGB pillow images (a batch); ``MASK``: a tuple of ``"L"`` images where
  255 means 1.0.
* ``MODEL``, ``CLIP``, ``VAE``, ``CONDITIONING``, ``LATENT``: small frozen dataclasses. A latent
  carries the pictures it stands for: none for an empty latent, the source images after
  ``VAEEncode``, the painted result after ``KSampler``.

The simulated sampler paints from a hash of its inputs: the composition follows the seed and
the image size, the palette follows the prompt texts, steps set how sharp it is, cfg the
contrast, and sampler and scheduler add a faint texture. Same inputs give the same bytes, and
an img2img run (``denoise`` < 1 on an encoded image) blends the painting into the source image.

Example::

    >>> out = execute("EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 255}, ctx)
    >>> out.values[0][0].getpixel((0, 0))
    (0, 0, 255)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import threading
import time
import traceback as traceback_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from .validation import full_type_name

__all__ = [
    "Interrupted",
    "NodeContext",
    "NodeExecutionError",
    "NodeOutput",
    "SimClip",
    "SimConditioning",
    "SimLatent",
    "SimModel",
    "SimVae",
    "execute",
    "is_output_node",
]

Images = tuple[Image.Image, ...]

OUTPUT_NODES = frozenset({"SaveImage", "PreviewImage", "SaveImageWebsocket"})


class NodeExecutionError(Exception):
    """A node failed while running; becomes the ``execution_error`` message.

    ``message`` is ``str(exception)`` as ComfyUI's node raised it (the engine writes
    ``exception_message`` as ``message + "\\n"``, as the real server does) and
    ``exception_type`` its class name as ComfyUI reports it (``"Exception"``,
    ``"PIL.UnidentifiedImageError"``). ``traceback`` lists the frames where it was raised.

    Example::

        >>> raise NodeExecutionError("boom", exception_type="RuntimeError")
    """

    def __init__(
        self, message: str, *, exception_type: str = "Exception", traceback: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type
        self.traceback = traceback or []

    @classmethod
    def from_exception(cls, exc: BaseException) -> NodeExecutionError:
        """Wrap an exception a node raised, keeping its type name and traceback."""
        frames = traceback_module.format_tb(exc.__traceback__)
        return cls(str(exc), exception_type=full_type_name(type(exc)), traceback=frames)


class Interrupted(Exception):
    """The prompt was interrupted; raised by ``ctx.progress`` and ``ctx.check_interrupt``."""


def _no_interrupt() -> None:
    return None


@dataclass
class NodeContext:
    """What a node may use besides its inputs; built by the engine for each node it runs."""

    node_id: str
    prompt_id: str
    prompt: dict[str, Any]
    extra_pnginfo: dict[str, Any] | None
    output_dir: Path
    input_dir: Path
    temp_dir: Path
    progress: Callable[[int, int], None]
    send_preview: Callable[[bytes, str], None]
    check_interrupt: Callable[[], None] = _no_interrupt
    step_seconds: float = 0.0
    #: the server's default ``--preview-method``: "auto" (a sampler sends a preview per
    #: step) in the ComfyUI comfynb models, "none" in the captured older one
    preview_method: str = "auto"


@dataclass
class NodeOutput:
    """A node's result: ``values`` by output index, and ``ui`` for ``executed`` and history."""

    values: tuple[Any, ...]
    ui: dict[str, Any] | None = None


@dataclass(frozen=True)
class SimModel:
    """A loaded (simulated) diffusion model."""

    name: str


@dataclass(frozen=True)
class SimClip:
    """A loaded (simulated) text encoder."""

    name: str


@dataclass(frozen=True)
class SimVae:
    """A loaded (simulated) VAE."""

    name: str


@dataclass(frozen=True)
class SimConditioning:
    """An encoded prompt text."""

    text: str
    clip: str


@dataclass(frozen=True)
class SimLatent:
    """A batch of latents of ``width`` x ``height`` pixels (multiples of 8).

    ``images`` holds the pictures the latent stands for, or is empty for an empty latent.
    """

    width: int
    height: int
    batch_size: int
    images: Images = field(default=(), repr=False)


def is_output_node(class_type: str) -> bool:
    """Whether ComfyUI treats this class as an output node.

    Example::

        >>> is_output_node("SaveImage"), is_output_node("ImageInvert")
        (True, False)
    """
    return class_type in OUTPUT_NODES


def execute(class_type: str, inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    """Run one node with its inputs (links already resolved to values).

    As in ComfyUI, the interrupt flag is checked when the node starts (and at each progress
    tick of the nodes that report progress).

    Example::

        >>> execute("SolidMask", {"value": 1.0, "width": 4, "height": 4}, ctx).values[0][0].mode
        'L'

    Raises:
        Interrupted: the prompt was interrupted.
        NodeExecutionError: the node failed, as the real node would (a save outside the
            output folder, an input file that is not an image...).
    """
    ctx.check_interrupt()
    try:
        run = _NODES[class_type]
        return run(inputs, ctx)
    except (Interrupted, NodeExecutionError):
        raise
    except Exception as exc:
        raise NodeExecutionError.from_exception(exc) from exc


# --- model-free image nodes -------------------------------------------------------------


def _empty_image(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    width, height = int(inputs["width"]), int(inputs["height"])
    color = int(inputs.get("color", 0))
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    image = Image.new("RGB", (width, height), rgb)
    return NodeOutput((tuple(image for _ in range(int(inputs.get("batch_size", 1)))),))


def _image_invert(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    return NodeOutput((tuple(ImageOps.invert(i) for i in _images(inputs["image"])),))


def _image_blur(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    images = _images(inputs["image"])
    radius, sigma = int(inputs["blur_radius"]), float(inputs["sigma"])
    if radius == 0:
        return NodeOutput((images,))
    # ComfyUI convolves with a (2*radius+1)^2 Gaussian of this sigma; pillow's blur takes
    # the standard deviation, and a kernel cut at `radius` cannot spread further than that.
    blur = ImageFilter.GaussianBlur(radius=min(sigma, float(radius)))
    return NodeOutput((tuple(i.filter(blur) for i in images),))


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _image_scale(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    images = _images(inputs["image"])
    width, height = int(inputs["width"]), int(inputs["height"])
    if width == 0 and height == 0:
        return NodeOutput((images,))
    method, crop = str(inputs["upscale_method"]), str(inputs["crop"])
    old_w, old_h = images[0].size
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    return NodeOutput((tuple(_upscale(i, width, height, method, crop) for i in images),))


def _upscale(image: Image.Image, width: int, height: int, method: str, crop: str) -> Image.Image:
    """ComfyUI's ``common_upscale``: optionally crop to the new aspect, centred, then resize."""
    if crop == "center":
        old_w, old_h = image.size
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        image = image.crop((x, y, old_w - x, old_h - y))
    return image.resize((width, height), _RESAMPLE.get(method, Image.Resampling.BICUBIC))


# Gaussian noise from uniform random bytes: byte v stands for the (v + 0.5)/256 quantile.
_GAUSS = [NormalDist().inv_cdf((v + 0.5) / 256) for v in range(256)]


def _image_add_noise(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    images = _images(inputs["image"])
    strength = float(inputs["strength"])
    rng = random.Random(int(inputs["seed"]))
    return NodeOutput((tuple(_add_noise(i, rng, strength) for i in images),))


def _add_noise(image: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """clip(image + strength * N(0, 1)), in 8 bits: add the positive part, subtract the rest."""
    noise = Image.frombytes("RGB", image.size, rng.randbytes(image.width * image.height * 3))
    scale = 255.0 * strength
    up = noise.point([max(0, round(z * scale)) for z in _GAUSS] * 3)
    down = noise.point([max(0, round(-z * scale)) for z in _GAUSS] * 3)
    return ImageChops.subtract(ImageChops.add(image, up), down)


def _image_blend(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    first, second = _broadcast(_images(inputs["image1"]), _images(inputs["image2"]))
    factor, mode = float(inputs["blend_factor"]), str(inputs["blend_mode"])
    out = []
    for a, b in zip(first, second, strict=True):
        if b.size != a.size:
            b = _upscale(b, a.width, a.height, "bicubic", "center")
        out.append(Image.blend(a, _BLEND_MODES[mode](a, b), factor))
    return NodeOutput((tuple(out),))


_BLEND_MODES: dict[str, Callable[[Image.Image, Image.Image], Image.Image]] = {
    "normal": lambda a, b: b,
    "multiply": ImageChops.multiply,
    "screen": ImageChops.screen,
    "overlay": ImageChops.overlay,
    "soft_light": ImageChops.soft_light,
    "difference": ImageChops.subtract,  # ComfyUI: clamp(image1 - image2), not |a - b|
}


def _broadcast(first: Images, second: Images) -> tuple[Images, Images]:
    """Pair two batches as torch broadcasting does: equal sizes, or one of them is 1."""
    if len(first) == len(second):
        return first, second
    if len(second) == 1:
        return first, second * len(first)
    if len(first) == 1:
        return first * len(second), second
    raise RuntimeError(
        f"The size of tensor a ({len(first)}) must match the size of tensor b ({len(second)}) "
        "at non-singleton dimension 0"
    )


def _image_composite_masked(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    destination = _images(inputs["destination"])
    source = _repeat(_images(inputs["source"]), len(destination))
    mask_in = inputs.get("mask")
    masks = _repeat(_images(mask_in), len(destination)) if mask_in is not None else None
    x, y = int(inputs["x"]), int(inputs["y"])
    out = []
    for index, dest in enumerate(destination):
        src = source[index]
        if inputs.get("resize_source"):
            src = src.resize(dest.size, Image.Resampling.BILINEAR)
        mask = masks[index].resize(src.size, Image.Resampling.BILINEAR) if masks else None
        result = dest.copy()
        result.paste(src, (x, y), mask)
        out.append(result)
    return NodeOutput((tuple(out),))


def _repeat(batch: Images, size: int) -> Images:
    """ComfyUI's ``repeat_to_batch_size``: cycle or cut a batch to ``size`` items."""
    return tuple(batch[i % len(batch)] for i in range(size))


def _solid_mask(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    level = round(float(inputs["value"]) * 255)
    mask = Image.new("L", (int(inputs["width"]), int(inputs["height"])), level)
    return NodeOutput(((mask,),))


def _load_image(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    path = _input_path(str(inputs["image"]), ctx)
    images: list[Image.Image] = []
    masks: list[Image.Image] = []
    with Image.open(path) as opened:
        for frame in ImageSequence.Iterator(opened):
            frame = ImageOps.exif_transpose(frame)
            if images and frame.size != images[0].size:
                continue  # as ComfyUI: frames of another size are skipped
            images.append(frame.convert("RGB"))
            masks.append(_mask_of(frame))
    return NodeOutput((tuple(images), tuple(masks)))


def _mask_of(frame: Image.Image) -> Image.Image:
    """1 - alpha where the image has alpha; else ComfyUI's 64x64 empty mask."""
    if "A" in frame.getbands():
        return ImageOps.invert(frame.getchannel("A"))
    if frame.mode == "P" and "transparency" in frame.info:
        return ImageOps.invert(frame.convert("RGBA").getchannel("A"))
    return Image.new("L", (64, 64), 0)


_ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}


def _input_path(name: str, ctx: NodeContext) -> str:
    """ComfyUI's ``get_annotated_filepath``, refusing any path outside the simulator's folders."""
    base = ctx.input_dir
    for suffix, folder in _ANNOTATIONS.items():
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            base = {"input": ctx.input_dir, "output": ctx.output_dir, "temp": ctx.temp_dir}[folder]
    root = os.path.abspath(base)
    path = os.path.abspath(os.path.join(root, name))
    if os.path.commonpath((root, path)) != root:
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{name}'")
    return path


# --- output nodes -----------------------------------------------------------------------


def _save_image(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    images = _images(inputs["images"])
    prefix = str(inputs.get("filename_prefix", "ComfyUI"))
    results = _save(images, prefix, ctx, folder=ctx.output_dir, kind="output", compress_level=4)
    return NodeOutput((images,), {"images": results})


_TEMP_LETTERS = "abcdefghijklmnopqrstupvxyz"  # sic: ComfyUI's PreviewImage alphabet


def _preview_image(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    images = _images(inputs["images"])
    # ComfyUI draws the letters once per node object, which lives on across prompts while the
    # node id stays in them: so the letters follow the node id, and its counter goes on.
    rng = random.Random(f"PreviewImage:{ctx.node_id}")
    prefix = "ComfyUI_temp_" + "".join(rng.choice(_TEMP_LETTERS) for _ in range(5))
    results = _save(images, prefix, ctx, folder=ctx.temp_dir, kind="temp", compress_level=1)
    return NodeOutput((images,), {"images": results})


def _save_image_websocket(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    """Send each image as a PNG preview frame, with progress 0..N-1 of N; no file, no UI."""
    images = _images(inputs["images"])
    for step, image in enumerate(images):
        ctx.progress(step, len(images))
        ctx.send_preview(_png_bytes(image, compress_level=1), "PNG")
    return NodeOutput(())


def _png_bytes(image: Image.Image, *, compress_level: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _save(
    images: Images, prefix: str, ctx: NodeContext, *, folder: Path, kind: str, compress_level: int
) -> list[dict[str, str]]:
    """ComfyUI's ``save_images``: ``<prefix>_<counter:05>_.png`` with prompt/workflow chunks."""
    width, height = images[0].size if images else (0, 0)
    target = _save_path(prefix, os.path.abspath(folder), width, height)
    info = _png_info(ctx)
    results = []
    counter = target.counter
    for batch_number, image in enumerate(images):
        name = f"{target.filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        image.save(os.path.join(target.folder, name), pnginfo=info, compress_level=compress_level)
        results.append({"filename": name, "subfolder": target.subfolder, "type": kind})
        counter += 1
    _COUNTERS.saved(target, counter)
    return results


def _png_info(ctx: NodeContext) -> PngInfo:
    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


@dataclass(frozen=True)
class _Target:
    folder: str
    filename: str
    counter: int
    subfolder: str
    prefix: str


def _save_path(prefix: str, output_dir: str, width: int, height: int) -> _Target:
    """ComfyUI's ``get_save_image_path``: where to save and the first free counter."""
    if "%" in prefix:
        prefix = _expand_vars(prefix, width, height)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(output_dir, subfolder)
    common = os.path.commonpath((output_dir, os.path.abspath(folder)))
    if common != output_dir:
        raise Exception(  # the real server raises a bare Exception with this text
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {output_dir}"
            f"\n         commonpath: {common}"
        )
    counter = _COUNTERS.next(folder, filename, prefix)
    return _Target(folder, filename, counter, subfolder, prefix)


def _expand_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for name, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", str(now.tm_mon).zfill(2)),
        ("%day%", str(now.tm_mday).zfill(2)),
        ("%hour%", str(now.tm_hour).zfill(2)),
        ("%minute%", str(now.tm_min).zfill(2)),
        ("%second%", str(now.tm_sec).zfill(2)),
    ):
        prefix = prefix.replace(name, value)
    return prefix


def _scan_counter(folder: str, filename: str, prefix: str) -> int:
    """Highest ``<filename>_<n>_`` counter in ``folder`` plus 1, exactly as ComfyUI reads names."""
    prefix_len = len(os.path.basename(prefix))
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return 1
    best = 0
    for name in names:
        head = name[: prefix_len + 1]
        if head[-1:] != "_" or os.path.normcase(head[:-1]) != os.path.normcase(filename):
            continue
        try:
            digits = int(name[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        best = max(best, digits)
    return best + 1


class _Counters:
    """The next file counter per (folder, name), so a save need not list the folder each time.

    The real server lists the folder on every save (quirk 13: slow with many files). The cached
    counter is trusted only while the folder's mtime is the one seen after our last save and our
    last file still exists: any other change to the folder (an upload, a reset) forces a scan.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[int, str, int]] = {}

    def next(self, folder: str, filename: str, prefix: str) -> int:
        key = (folder, os.path.normcase(filename))
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            mtime, last_file, counter = known
            try:
                if os.stat(folder).st_mtime_ns == mtime and os.path.exists(last_file):
                    return counter
            except FileNotFoundError:
                pass
        return _scan_counter(folder, filename, prefix)

    def saved(self, target: _Target, next_counter: int) -> None:
        if next_counter == target.counter:
            return  # nothing saved
        name = target.filename.replace("%batch_num%", "0")
        last_file = os.path.join(target.folder, f"{name}_{next_counter - 1:05}_.png")
        key = (target.folder, os.path.normcase(target.filename))
        mtime = os.stat(target.folder).st_mtime_ns
        with self._lock:
            self._known[key] = (mtime, last_file, next_counter)


_COUNTERS = _Counters()


# --- simulated model nodes --------------------------------------------------------------


def _checkpoint_loader(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    name = str(inputs["ckpt_name"])
    return NodeOutput((SimModel(name), SimClip(name), SimVae(name)))


def _clip_text_encode(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    clip = inputs["clip"]
    if not isinstance(clip, SimClip):
        raise RuntimeError(
            "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node "
            "your checkpoint does not contain a valid clip or text encoder model."
        )
    return NodeOutput((SimConditioning(str(inputs["text"]), clip.name),))


def _empty_latent_image(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    # The latent is 1/8 of the size, so the decoded picture is the size rounded down to 8.
    width, height = int(inputs["width"]) // 8 * 8, int(inputs["height"]) // 8 * 8
    return NodeOutput((SimLatent(width, height, int(inputs.get("batch_size", 1))),))


def _vae_encode(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    pixels = _images(inputs["pixels"])
    width, height = pixels[0].width // 8 * 8, pixels[0].height // 8 * 8
    if width == 0 or height == 0:
        raise RuntimeError(
            f"Input image is too small to encode: {pixels[0].width}x{pixels[0].height}"
        )
    cropped = tuple(_crop_center(image, width, height) for image in pixels)
    return NodeOutput((SimLatent(width, height, len(cropped), cropped),))


def _crop_center(image: Image.Image, width: int, height: int) -> Image.Image:
    x, y = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((x, y, x + width, y + height))


def _vae_decode(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    latent = inputs["samples"]
    if not isinstance(latent, SimLatent):
        raise TypeError(f"'{type(latent).__name__}' object is not subscriptable")
    if latent.images:
        return NodeOutput((latent.images,))
    # An unsampled empty latent decodes to a flat grey-brown, as a real VAE gives zeros.
    flat = Image.new("RGB", (latent.width, latent.height), (124, 116, 104))
    return NodeOutput((tuple(flat for _ in range(latent.batch_size)),))


def _ksampler(inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    latent, steps = inputs["latent_image"], int(inputs["steps"])
    if not isinstance(latent, SimLatent):
        raise TypeError(f"'{type(latent).__name__}' object is not subscriptable")
    painted = tuple(_paint(inputs, latent, index) for index in range(latent.batch_size))
    # ComfyUI's default --preview-method auto (latent2rgb without TAESD models): after each
    # step's progress, a JPEG of the latent (1/8 of the image's size) as it is at that step.
    # Older servers defaulted to "none" (comfy/cli_args.py): no previews.
    previews = ctx.preview_method != "none"
    small = painted[0].resize((max(1, latent.width // 8), max(1, latent.height // 8)))
    rng = random.Random(int(inputs["seed"]))  # the same previews for the same seed
    noise = Image.frombytes("RGB", small.size, rng.randbytes(small.width * small.height * 3))
    for step in range(1, steps + 1):  # ComfyUI reports 1..steps of steps
        if ctx.step_seconds > 0:
            time.sleep(ctx.step_seconds)
        ctx.progress(step, steps)
        if previews:
            ctx.send_preview(_jpeg_bytes(Image.blend(noise, small, step / steps)), "JPEG")
    return NodeOutput((SimLatent(latent.width, latent.height, latent.batch_size, painted),))


def _jpeg_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _paint(inputs: dict[str, Any], latent: SimLatent, index: int) -> Image.Image:
    """The simulated sampler's picture for batch item ``index``."""
    size = (latent.width, latent.height)
    model = inputs["model"].name if isinstance(inputs["model"], SimModel) else str(inputs["model"])
    seed = int(inputs["seed"])
    texts = [_text(inputs["positive"]), _text(inputs["negative"])]
    image = _composition(_digest("seed", seed, index, model, size), _palette(texts), size)
    image = _sharpen_with_steps(image, int(inputs["steps"]))
    image = ImageEnhance.Contrast(image).enhance(0.6 + min(float(inputs["cfg"]), 30.0) / 10.0)
    image = _texture(
        image, _digest("sampler", inputs["sampler_name"], inputs["scheduler"], seed, index)
    )
    denoise = float(inputs.get("denoise", 1.0))
    if denoise >= 1.0:
        return image
    source = latent.images[index % len(latent.images)] if latent.images else None
    base = source if source is not None else Image.new("RGB", size, (124, 116, 104))
    return Image.blend(base, image, max(0.0, denoise))


def _text(conditioning: Any) -> str:
    return conditioning.text if isinstance(conditioning, SimConditioning) else str(conditioning)


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).digest()


def _palette(texts: Sequence[str]) -> list[tuple[int, int, int]]:
    """Six colours that follow the prompt texts: a new prompt gives a new palette."""
    digest = _digest("palette", *texts)
    return [(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 18, 3)]


def _composition(
    digest: bytes, palette: list[tuple[int, int, int]], size: tuple[int, int]
) -> Image.Image:
    """A smooth colour field with a few soft shapes, laid out from the seed's digest."""
    rng = random.Random(digest)
    grid = Image.new("RGB", (5, 5))
    grid.putdata([_jitter(rng.choice(palette), rng) for _ in range(25)])
    image = grid.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(rng.randint(3, 6)):
        cx, cy = rng.random() * width, rng.random() * height
        r = (0.08 + rng.random() * 0.25) * min(width, height)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_jitter(rng.choice(palette), rng))
    return image


def _jitter(color: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + rng.randint(-24, 24))) for c in color)
    return (r, g, b)


def _sharpen_with_steps(image: Image.Image, steps: int) -> Image.Image:
    """Few steps leave a soft picture; from 20 steps on it is crisp."""
    softness = max(0.0, (20 - steps) / 20) * max(image.size) / 64
    return image.filter(ImageFilter.GaussianBlur(softness)) if softness > 0 else image


def _texture(image: Image.Image, digest: bytes) -> Image.Image:
    """A faint pattern per sampler and scheduler: the same picture, told apart by its grain."""
    rng = random.Random(digest)
    size = (max(1, image.width // 4), max(1, image.height // 4))
    grain = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    pattern = grain.resize(image.size, Image.Resampling.NEAREST)
    return Image.blend(image, pattern, 0.06)


# --- helpers ----------------------------------------------------------------------------


def _images(value: Any) -> Images:
    """An IMAGE or MASK input as a tuple of pillow images; fail as ComfyUI would otherwise."""
    if isinstance(value, tuple) and all(isinstance(i, Image.Image) for i in value):
        return value
    raise AttributeError(f"'{type(value).__name__}' object has no attribute 'shape'")


_NODES: dict[str, Callable[[dict[str, Any], NodeContext], NodeOutput]] = {
    "EmptyImage": _empty_image,
    "LoadImage": _load_image,
    "ImageInvert": _image_invert,
    "ImageBlur": _image_blur,
    "ImageScale": _image_scale,
    "ImageAddNoise": _image_add_noise,
    "ImageBlend": _image_blend,
    "ImageCompositeMasked": _image_composite_masked,
    "SolidMask": _solid_mask,
    "SaveImage": _save_image,
    "PreviewImage": _preview_image,
    "SaveImageWebsocket": _save_image_websocket,
    "CheckpointLoaderSimple": _checkpoint_loader,
    "CLIPTextEncode": _clip_text_encode,
    "EmptyLatentImage": _empty_latent_image,
    "KSampler": _ksampler,
    "VAEDecode": _vae_decode,
    "VAEEncode": _vae_encode,
}
