"""HuggingFace GPT-2, LLaMA and BERT, built from small configs with random weights,
imported with ``rp.from_torch(model, example_input={"inputs_embeds": emb})`` (through
torch.export) and explained with AttnLRP and CP-LRP: the relevance equals LXT 2.1's
(jax session, which installs transformers and LXT beside torch; zennit, which LXT would
import, is not there).

LXT runs in subprocesses (tests/_lxt_reference.py): its patches of torch and transformers
last for the whole process and would change every other test's torch modules. The test
loads the weights LXT's models had into its own, unpatched, copies.

Tolerances, relative to the largest entry, in float64:

* GPT-2 and BERT: 1e-8. relprop and LXT compute the same rules, in relevance form and
  in gradient form; they differ by the stabilisers: LXT's identity rule on GELU and tanh
  keeps ``x / (x + 1e-10)`` of the relevance, relprop's epsilon rule adds 1e-12 to each
  denominator. Measured: 8e-10 (GPT-2), 5e-10 (BERT).
* LLaMA: 2e-6. transformers computes LLaMA's RMSNorm and its attention softmax in float32
  even in a float64 model (LXT's relevance too), relprop computes every layer in float64.
  Measured: 2.2e-7 (AttnLRP), 9e-8 (CP-LRP).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import BACKEND

import relprop as rp

if BACKEND != "jax":
    pytest.skip("HuggingFace models against LXT: the jax session installs them",
                allow_module_level=True)
for package in ("torch", "transformers", "lxt"):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed", allow_module_level=True)

import torch  # noqa: E402
from safetensors.torch import load_file, load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import _lxt_reference as reference  # noqa: E402

TOKENS = 6
CONFIGS = {
    "gpt2": {"vocab_size": 40, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2},
    "llama": {"vocab_size": 40, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
              "max_position_embeddings": 16},
    "bert": {"vocab_size": 40, "hidden_size": 16, "intermediate_size": 32,
             "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 16,
             "num_labels": 3},
}
SEEDS = {"gpt2": 0, "llama": 1, "bert": 2}
TARGETS = {"gpt2": 7, "llama": 3, "bert": 1}
TOLERANCE = {"gpt2": 1e-8, "llama": 2e-6, "bert": 1e-8}
MODES = {"attnlrp": ("gpt2", "llama", "bert"), "cplrp": ("gpt2", "llama")}  # LXT: no BERT CP


def _entry(arch: str, implementation: str = "eager") -> dict:
    return {"name": arch, "arch": arch, "seed": SEEDS[arch], "tokens": TOKENS,
            "target": TARGETS[arch],
            "config": {**CONFIGS[arch], "attn_implementation": implementation}}


@pytest.fixture(scope="module")
def lxt(tmp_path_factory) -> dict[str, Path]:
    """mode -> the folder with LXT's weights and relevance of each architecture (both
    modes computed at once, in two processes)."""
    script = Path(__file__).with_name("_lxt_reference.py")
    folders, running = {}, []
    for mode, archs in MODES.items():
        folder = tmp_path_factory.mktemp(mode)
        spec = folder / "spec.json"
        spec.write_text(json.dumps({"mode": mode, "models": [_entry(a) for a in archs]}))
        running.append(subprocess.Popen([sys.executable, str(script), str(spec), str(folder)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        folders[mode] = folder
    for process in running:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output.decode()[-3000:]
    return folders


_IMPORTED: dict[tuple, tuple] = {}


def _model(folder: Path, arch: str, implementation: str):
    """relprop's import of an unpatched copy holding LXT's weights, and LXT's results
    (imported once per folder, architecture and attention implementation)."""
    key = (folder, arch, implementation)
    if key not in _IMPORTED:
        config = {**CONFIGS[arch], "attn_implementation": implementation}
        hf = reference.build(arch, config, SEEDS[arch])
        load_model(hf, str(folder / f"{arch}.model.safetensors"))
        saved = load_file(str(folder / f"{arch}.lxt.safetensors"))
        model = rp.from_torch(hf, example_input={"inputs_embeds": saved["embeds"]})
        _IMPORTED[key] = hf, model, saved
    return _IMPORTED[key]


def _explained(arch: str):
    target = TARGETS[arch]
    if arch == "bert":
        return lambda out: out[:, target]
    return lambda out: out[:, -1, target]  # the next token after the last position


def _composite(mode: str):
    return rp.composites.AttnLRP() if mode == "attnlrp" else rp.composites.CPLRP()


def _assert_matches(actual, expected, rtol: float) -> None:
    actual, expected = rp.to_numpy(actual), rp.to_numpy(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    error = np.abs(actual - expected).max() / scale
    assert error <= rtol, f"max |relprop - LXT| = {error:.3g} of the largest entry"


CASES = [(mode, arch, implementation) for mode, archs in MODES.items() for arch in archs
         for implementation in ("eager", "sdpa")]


@pytest.mark.parametrize(("mode", "arch", "implementation"), CASES)
def test_relevance_equals_lxt(lxt, mode: str, arch: str, implementation: str) -> None:
    _, model, saved = _model(lxt[mode], arch, implementation)
    embeds = saved["embeds"]
    np.testing.assert_allclose(rp.to_numpy(model(embeds)), saved["logits"].numpy(),
                               rtol=TOLERANCE[arch], atol=TOLERANCE[arch])
    relevance = rp.lrp(model, embeds, target=_explained(arch), composite=_composite(mode))
    assert isinstance(relevance, torch.Tensor) and relevance.dtype == torch.float64
    assert relevance.shape == embeds.shape  # (batch, tokens, hidden)
    _assert_matches(relevance, saved["relevance"], TOLERANCE[arch])
    # each token's relevance: summed over the hidden axis
    _assert_matches(relevance.sum(-1), saved["relevance"].sum(-1), TOLERANCE[arch])


def test_one_hot_target_equals_function_target(lxt) -> None:
    """The issue's usage: a one-hot array of the logits' shape, scaled by the logits, as
    the initial relevance."""
    _, model, saved = _model(lxt["attnlrp"], "gpt2", "eager")
    embeds = saved["embeds"]
    onehot = torch.zeros_like(saved["logits"])
    onehot[:, -1, TARGETS["gpt2"]] = 1.0
    relevance = rp.lrp(model, embeds, target=onehot * model(embeds),
                       composite=rp.composites.AttnLRP())
    _assert_matches(relevance, saved["relevance"], TOLERANCE["gpt2"])


def test_cplrp_conserves_without_biases(lxt) -> None:
    """LLaMA has no biases: CP-LRP (attention weights constant) passes the logit to the
    embeddings whole, up to the stabilisers."""
    _, model, saved = _model(lxt["cplrp"], "llama", "eager")
    embeds = saved["embeds"]
    explained = _explained("llama")
    relevance = rp.lrp(model, embeds, target=explained, composite=rp.composites.CPLRP())
    logit = float(explained(model(embeds))[0])
    assert float(relevance.sum()) == pytest.approx(logit, rel=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "jax", "array_api_strict"])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_every_backend_gives_the_same_relevance(lxt, arch: str, backend: str) -> None:
    pytest.importorskip(backend)
    _, model, saved = _model(lxt["attnlrp"], arch, "sdpa")
    embeds = saved["embeds"]
    target = torch.zeros_like(saved["logits"])
    index = (0, TARGETS[arch]) if arch == "bert" else (0, -1, TARGETS[arch])
    target[index] = 1.0
    composite = rp.composites.AttnLRP()
    expected = rp.lrp(model, embeds, target=target, composite=composite)
    other = model.to(backend)
    x = rp.asarray(embeds.numpy(), backend=backend)
    actual = rp.lrp(other, x, target=rp.asarray(target.numpy(), backend=backend),
                    composite=composite)
    assert rp._xp.library_of(actual) == backend
    np.testing.assert_allclose(rp.to_numpy(actual), expected.numpy(), rtol=1e-10,
                               atol=1e-12 * float(expected.abs().max()))


def test_keywords_need_one_floating_tensor() -> None:
    hf = reference.build("gpt2", CONFIGS["gpt2"], 0)
    ids = torch.zeros(1, TOKENS, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one floating-point tensor"):
        rp.from_torch(hf, example_input={"input_ids": ids})


def test_grouped_query_attention(tmp_path) -> None:
    """LLaMA with one key-value head for two query heads (repeat_kv: an expand, read as
    rp.Broadcast): the shared head's relevance is the sum over its copies, as autograd
    sums gradients; checked against LXT."""
    entry = {**_entry("llama"), "name": "gqa"}
    entry["config"]["num_key_value_heads"] = 1
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mode": "attnlrp", "models": [entry]}))
    script = Path(__file__).with_name("_lxt_reference.py")
    done = subprocess.run([sys.executable, str(script), str(spec), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    hf = reference.build("llama", entry["config"], entry["seed"])
    load_model(hf, str(tmp_path / "gqa.model.safetensors"))
    saved = load_file(str(tmp_path / "gqa.lxt.safetensors"))
    model = rp.from_torch(hf, example_input={"inputs_embeds": saved["embeds"]})
    assert any(isinstance(layer, rp.Broadcast) for layer in model.layers)
    relevance = rp.lrp(model, saved["embeds"], target=_explained("llama"),
                       composite=rp.composites.AttnLRP())
    _assert_matches(relevance, saved["relevance"], TOLERANCE["llama"])
