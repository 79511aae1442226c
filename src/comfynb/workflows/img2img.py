"""Wire an image into a workflow: the img2img form of a txt2img prompt, or a LoadImage set.

``comfynb.refine`` uses these to start children from a picked candidate: the candidate's image
is uploaded to the server under a name made from its content, and that name goes into the
workflow's ``LoadImage``. Pure data in, data out: API prompts (dicts) in and out, the input
never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from ..errors import WorkflowError
from .graph import class_of, inputs_of, is_link, title_of

__all__ = ["EMPTY_LATENTS", "set_denoise", "set_load_image", "to_img2img"]

#: The nodes that start a txt2img sampler from an empty latent of a chosen size.
EMPTY_LATENTS: Final = frozenset(
    {
        "EmptyLatentImage",
        "EmptySD3LatentImage",
        "EmptyHunyuanImageLatent",
        "EmptyFlux2LatentImage",
        "EmptyChromaRadianceLatentImage",
        "EmptyQwenImageLayeredLatentImage",
    }
)


def to_img2img(prompt: Mapping[str, Any], image: str, *, denoise: float = 0.6) -> dict[str, Any]:
    """The img2img form of a txt2img prompt: the sampler starts from ``image``, not noise.

    Each sampler fed by an empty latent (``EmptyLatentImage`` and its kin) is fed instead by
    ``LoadImage(image)`` -> ``VAEEncode`` (with the VAE that decodes that sampler's output),
    and its ``denoise`` is set (on a ``KSampler``, or on the ``BasicScheduler`` of a custom
    sampler). A prompt that already loads an image into a ``VAEEncode`` gets ``image`` in
    that ``LoadImage`` and keeps its own denoise.

    Example::

        >>> api = to_img2img(txt2img, "comfynb/3f2a9c.png", denoise=0.5)
        >>> [n["class_type"] for n in api.values()].count("VAEEncode"), api["3"]["inputs"]["denoise"]
        (1, 0.5)

    Raises:
        WorkflowError: the graph has no sampler started from an empty latent or a loaded
            image, no VAE to encode with, or no ``denoise`` to set; the message says which.
    """
    if isinstance(denoise, bool) or not isinstance(denoise, int | float) or not 0 < denoise <= 1:
        raise WorkflowError(f"denoise is a number above 0 and at most 1, got {denoise!r}")
    result = copy.deepcopy(dict(prompt))
    loads = _loads_into_encoder(result)
    if loads:
        for node_id in loads:
            result[node_id]["inputs"]["image"] = image
        return result
    samplers = [
        (node_id, link)
        for node_id, node in result.items()
        if is_link(link := inputs_of(node).get("latent_image"))
        and (class_of(result.get(str(link[0]))) or "") in EMPTY_LATENTS
    ]
    if not samplers:
        raise WorkflowError(
            "this workflow has no sampler started from an empty latent (EmptyLatentImage -> "
            "KSampler latent_image) nor a LoadImage -> VAEEncode to put the image in; pass an "
            "img2img workflow to refine with (comfynb ships one: "
            "comfynb.Workflow.example('img2img'))"
        )
    next_id = max((int(n) for n in result if n.isdigit()), default=0) + 1
    replaced: set[str] = set()
    for node_id, link in samplers:
        vae = _vae_for(result, node_id)
        load_id, encode_id = str(next_id), str(next_id + 1)
        next_id += 2
        result[load_id] = {
            "class_type": "LoadImage",
            "inputs": {"image": image},
            "_meta": {"title": "Load Image"},
        }
        result[encode_id] = {
            "class_type": "VAEEncode",
            "inputs": {"pixels": [load_id, 0], "vae": vae},
            "_meta": {"title": "VAE Encode"},
        }
        result[node_id]["inputs"]["latent_image"] = [encode_id, 0]
        replaced.add(str(link[0]))
        _set_denoise(result, node_id, denoise)
    for empty in replaced:
        if not any(
            is_link(v) and str(v[0]) == empty
            for n in result.values()
            for v in inputs_of(n).values()
        ):
            del result[empty]
    return result


def set_load_image(prompt: Mapping[str, Any], image: str) -> dict[str, Any]:
    """``prompt`` with ``image`` in its one ``LoadImage`` node.

    Example::

        >>> set_load_image(img2img, "comfynb/3f2a9c.png")["10"]["inputs"]["image"]
        'comfynb/3f2a9c.png'

    Raises:
        WorkflowError: no LoadImage, or several (the message lists them: set the one you
            mean by its id or title instead).
    """
    loads = [n for n, node in prompt.items() if class_of(node) == "LoadImage"]
    if len(loads) != 1:
        listed = ", ".join(f'"{n}" ({title_of(prompt[n])})' for n in loads) or "none"
        raise WorkflowError(
            f"refine puts the image in the workflow's one LoadImage node; it has {listed}. "
            "Pass a workflow with one LoadImage, or set the image yourself "
            '(params={"<id or title>.image": ...})'
        )
    result = copy.deepcopy(dict(prompt))
    result[loads[0]]["inputs"]["image"] = image
    return result


def set_denoise(prompt: Mapping[str, Any], denoise: float) -> dict[str, Any]:
    """``prompt`` with ``denoise`` on each sampler that starts from an encoded image.

    A sampler whose ``latent_image`` comes from a ``VAEEncode`` gets it (on a ``KSampler``,
    or on the ``BasicScheduler`` of a custom sampler).

    Example::

        >>> set_denoise(to_img2img(txt2img, "comfynb/3f2a9c.png"), 0.4)["3"]["inputs"]["denoise"]
        0.4

    Raises:
        WorkflowError: a bad denoise, no sampler started from an encoded image, or one with
            no denoise to set.
    """
    if isinstance(denoise, bool) or not isinstance(denoise, int | float) or not 0 < denoise <= 1:
        raise WorkflowError(f"denoise is a number above 0 and at most 1, got {denoise!r}")
    result = copy.deepcopy(dict(prompt))
    samplers = [
        node_id
        for node_id, node in result.items()
        if is_link(link := inputs_of(node).get("latent_image"))
        and class_of(result.get(str(link[0]))) in ("VAEEncode", "VAEEncodeForInpaint")
    ]
    if not samplers:
        raise WorkflowError(
            "this workflow has no sampler started from an encoded image (VAEEncode -> "
            "KSampler latent_image) to set the denoise of"
        )
    for node_id in samplers:
        _set_denoise(result, node_id, denoise)
    return result


def _loads_into_encoder(prompt: dict[str, Any]) -> list[str]:
    """The LoadImage nodes whose image a VAEEncode reads: an img2img graph's input."""
    found = []
    for node in prompt.values():
        if class_of(node) in ("VAEEncode", "VAEEncodeForInpaint"):
            pixels = inputs_of(node).get("pixels")
            if is_link(pixels) and class_of(prompt.get(str(pixels[0]))) == "LoadImage":
                found.append(str(pixels[0]))
    return sorted(set(found))


def _vae_for(prompt: dict[str, Any], sampler: str) -> list[Any]:
    """The VAE link of the VAEDecode that decodes ``sampler``'s output (or the only one)."""
    decoders = [
        node for node in prompt.values() if class_of(node) in ("VAEDecode", "VAEDecodeTiled")
    ]
    for node in decoders:
        samples = inputs_of(node).get("samples")
        if is_link(samples) and str(samples[0]) == sampler and is_link(inputs_of(node).get("vae")):
            return list(inputs_of(node)["vae"])
    vaes = {tuple(v) for n in decoders if is_link(v := inputs_of(n).get("vae"))}
    if len(vaes) == 1:
        return list(next(iter(vaes)))
    raise WorkflowError(
        f'cannot tell which VAE encodes the image for sampler "{sampler}": the workflow has '
        f"{len(vaes)} VAEDecode VAEs; pass an img2img workflow to refine with"
    )


def _set_denoise(prompt: dict[str, Any], sampler: str, denoise: float) -> None:
    inputs = prompt[sampler]["inputs"]
    if "denoise" in inputs and not is_link(inputs["denoise"]):
        inputs["denoise"] = denoise
        return
    sigmas = inputs.get("sigmas")
    if is_link(sigmas):
        scheduler = prompt.get(str(sigmas[0]), {}).get("inputs", {})
        if "denoise" in scheduler and not is_link(scheduler["denoise"]):
            scheduler["denoise"] = denoise
            return
    raise WorkflowError(
        f'sampler "{sampler}" ({class_of(prompt[sampler])}) has no denoise to set (a KSampler '
        "or a BasicScheduler has one); pass an img2img workflow to refine with"
    )
