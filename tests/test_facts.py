"""A candidate's seed, cfg, steps, sampler and prompt are read from the prompt that ran
(comfynb.workflows.facts), on the graph shapes ComfyUI's own templates use."""

from __future__ import annotations

from typing import Any

from comfynb.workflows.facts import GenerationFacts, generation_facts

# ComfyUI's default graph as its frontend posts it (ui-to-api/default_sd15_ui.api.json)
TXT2IMG: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0],
        "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "euler",
        "scheduler": "normal", "seed": 156680208700286, "steps": 20}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 512}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "purple galaxy bottle"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "text, watermark"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}  # fmt: skip


def test_the_default_graph() -> None:
    assert generation_facts(TXT2IMG, "9") == GenerationFacts(
        seed=156680208700286, cfg=8, steps=20, sampler="euler", prompt="purple galaxy bottle"
    )
    assert generation_facts(TXT2IMG) == generation_facts(TXT2IMG, "9")  # the one output


def test_the_sampler_that_made_the_image_wins_over_an_earlier_pass() -> None:
    hires = dict(TXT2IMG)
    hires["10"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["3", 0], "scale_by": 1.5},
    }
    hires["11"] = {"class_type": "KSampler", "inputs": {
        "cfg": 5.5, "denoise": 0.5, "latent_image": ["10", 0], "model": ["4", 0],
        "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "dpmpp_2m",
        "scheduler": "karras", "seed": 7, "steps": 12}}  # fmt: skip
    hires["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}}
    hires["13"] = {
        "class_type": "SaveImage",
        "inputs": {"filename_prefix": "hr", "images": ["12", 0]},
    }
    assert generation_facts(hires, "13") == GenerationFacts(
        7, 5.5, 12, "dpmpp_2m", "purple galaxy bottle"
    )
    assert generation_facts(hires, "9").seed == 156680208700286  # each output its own facts


def test_a_custom_sampler_finds_its_values_on_the_nodes_around_it() -> None:
    prompt = {
        "1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "2": {"class_type": "CFGGuider", "inputs": {"cfg": 1, "model": ["9", 0],
              "negative": ["4", 0], "positive": ["3", 0]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["9", 1], "text": ["5", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["9", 1], "text": "blurry"}},
        "5": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a yeti reading"}},
        "6": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "res_multistep"}},
        "7": {"class_type": "BasicScheduler", "inputs": {"model": ["9", 0], "scheduler": "simple",
              "steps": 8, "denoise": 1}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["1", 0],
              "guider": ["2", 0], "sampler": ["6", 0], "sigmas": ["7", 0], "latent_image": ["10", 0]}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "10": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["9", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "c"}},
    }  # fmt: skip
    assert generation_facts(prompt, "12") == GenerationFacts(
        42, 1, 8, "res_multistep", "a yeti reading"
    )


def test_the_positive_text_is_not_taken_from_a_negative_passed_alongside() -> None:
    """LTXVConditioning takes negative before positive; output 0 is the positive."""
    prompt = {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["38", 0], "text": "a woman"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["38", 0], "text": "low quality"}},
        "38": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5.safetensors"}},
        "69": {"class_type": "LTXVConditioning", "inputs": {"frame_rate": 25,
               "negative": ["7", 0], "positive": ["6", 0]}},
        "72": {"class_type": "SamplerCustom", "inputs": {"cfg": 3, "negative": ["69", 1],
               "noise_seed": 5, "positive": ["69", 0]}},
        "79": {"class_type": "SaveVideo", "inputs": {"video": ["72", 0]}},
    }  # fmt: skip
    facts = generation_facts(prompt)
    assert (facts.seed, facts.cfg, facts.prompt) == (5, 3, "a woman")


def test_an_api_node_without_conditioning_gives_its_own_prompt_and_seed() -> None:
    prompt = {
        "1": {"class_type": "OpenAIGPTImage1", "inputs": {"prompt": "a cat on a boat", "seed": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert generation_facts(prompt, "2") == GenerationFacts(seed=0, prompt="a cat on a boat")


def test_what_is_missing_or_not_literal_is_none() -> None:
    prompt = {
        "1": {"class_type": "KSampler", "inputs": {"seed": ["3", 0], "cfg": True, "steps": 2.5}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "PrimitiveInt", "inputs": {"value": 4}},
    }
    assert generation_facts(prompt, "2") == GenerationFacts()
    assert generation_facts({}, None) == GenerationFacts()
    assert generation_facts(prompt, "nope") == GenerationFacts()
