"""LXT 2.1's relevance for small HuggingFace models, for tests/test_huggingface.py (test
only; run as a script in a subprocess, never imported by the tests).

LXT patches ``torch.nn.LayerNorm``, ``torch.nn.Dropout`` and transformers' modules for
the whole process, and its patches cannot be undone; so each mode (AttnLRP, CP-LRP) runs
in a process of its own, and the test process never imports LXT. ``lxt.efficient``
imports ``torchvision.models.vision_transformer``, and torchvision does not install beside
torch 2.13: a stand-in module whose only content is torch's ``nn`` (all that LXT reads
from it, to name ViT's modules in a patch map that is built and never applied) is put in
``sys.modules`` first.

Usage: ``python _lxt_reference.py SPEC.json OUT_DIR``. SPEC holds ``mode`` (``"attnlrp"``
or ``"cplrp"``) and ``models``, a list of ``{"name", "arch", "config", "seed", "tokens",
"target"}`` (``arch``: ``"gpt2"``, ``"llama"`` or ``"bert"``). For each model, built from
its config with random weights (:func:`build`), OUT_DIR gets ``<name>.model.safetensors``
(the weights, for the test to load into its own unpatched copy) and
``<name>.lxt.safetensors`` (``embeds``, LXT's ``relevance`` = inputs_embeds * grad, and
``logits``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CLASSES = {
    "gpt2": ("gpt2", "GPT2Config", "GPT2LMHeadModel"),
    "llama": ("llama", "LlamaConfig", "LlamaForCausalLM"),
    "bert": ("bert", "BertConfig", "BertForSequenceClassification"),
}
"""arch -> (transformers.models submodule, config class, model class)."""


def modeling(arch: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"transformers.models.{CLASSES[arch][0]}.modeling_{arch}")


def build(arch: str, config: dict[str, Any], seed: int) -> Any:
    """The model of ``arch`` from ``config``, float64, eval mode, with random weights:
    normalisation scales ``1 + 0.2 N(0, 1)``, every other parameter ``0.3 N(0, 1)`` (so
    that biases, shifts and position embeddings are not zero)."""
    import torch
    import transformers

    _, config_name, model_name = CLASSES[arch]
    cfg = getattr(transformers, config_name)(**config)
    torch.manual_seed(seed)
    model = getattr(modeling(arch), model_name)(cfg).to(torch.float64).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm = any(part in name for part in ("ln", "norm", "LayerNorm"))
            if norm and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def embeddings(config: dict[str, Any], tokens: int, seed: int) -> torch.Tensor:
    import torch

    hidden = config.get("n_embd", config.get("hidden_size"))
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randn(1, tokens, hidden, dtype=torch.float64, generator=generator)


def explained(logits: torch.Tensor, arch: str, target: int) -> torch.Tensor:
    """The explained logit: the last position's for causal LMs, the class's for BERT."""
    return logits[0, -1, target] if arch != "bert" else logits[0, target]


def _import_lxt() -> ModuleType:
    """``lxt.efficient``, imported with the torchvision stand-in in ``sys.modules`` (taken
    out again afterwards; transformers, imported first, has already found no torchvision).
    """
    import importlib.machinery
    import warnings

    import torch
    import transformers  # noqa: F401 - before the stand-in: it looks for torchvision once

    vision_transformer = ModuleType("torchvision.models.vision_transformer")
    vision_transformer.nn = torch.nn  # type: ignore[attr-defined]
    models = ModuleType("torchvision.models")
    models.vision_transformer = vision_transformer  # type: ignore[attr-defined]
    package = ModuleType("torchvision")
    package.models = models  # type: ignore[attr-defined]
    standins = {"torchvision": package, "torchvision.models": models,
                "torchvision.models.vision_transformer": vision_transformer}
    for name, module in standins.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []  # type: ignore[attr-defined]
    sys.modules.update(standins)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "zennit is not available": not needed here
            import lxt.efficient
            import lxt.efficient.models  # noqa: F401 - the patch maps
    finally:
        for name in standins:
            sys.modules.pop(name, None)
    return lxt.efficient


def main(spec_path: str, out_dir: str) -> None:
    from safetensors.torch import save_file, save_model

    spec = json.loads(Path(spec_path).read_text())
    efficient = _import_lxt()
    for arch in dict.fromkeys(m["arch"] for m in spec["models"]):  # before building (BERT)
        if spec["mode"] == "cplrp":
            maps = getattr(efficient.models, arch)
            efficient.monkey_patch(modeling(arch), patch_map=maps.cp_LRP)
        else:
            efficient.monkey_patch(modeling(arch))
    out = Path(out_dir)
    for entry in spec["models"]:
        model = build(entry["arch"], entry["config"], entry["seed"])
        for p in model.parameters():
            p.requires_grad_(False)
        embeds = embeddings(entry["config"], entry["tokens"], entry["seed"]).requires_grad_(True)
        cache = {} if entry["arch"] == "bert" else {"use_cache": False}
        logits = model(inputs_embeds=embeds, **cache).logits
        explained(logits, entry["arch"], entry["target"]).backward()
        relevance = (embeds * embeds.grad).detach()
        save_model(model, str(out / f"{entry['name']}.model.safetensors"))
        save_file({"embeds": embeds.detach(), "relevance": relevance,
                   "logits": logits.detach()}, str(out / f"{entry['name']}.lxt.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
