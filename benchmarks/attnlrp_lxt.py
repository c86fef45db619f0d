"""relprop's AttnLRP and CP-LRP on HuggingFace GPT-2 and LLaMA against LXT 2.1's, time
and memory, on the same model and input.

    python benchmarks/attnlrp_lxt.py [--arch gpt2 llama] [--repeat 7] [--markdown PATH]

Needs torch, transformers 4.53.3 and LXT 2.1 (``pip install --no-deps lxt==2.1``; see
backends/transformers.txt). One process per architecture: the model is built from a
config with random weights (tests/_lxt_reference.py), imported with ``rp.from_torch``
first, then LXT patches transformers' classes (for good: which is why each table has its
own process and plain autograd on the unpatched model is timed before the patch, not
interleaved). The timed methods, interleaved, median of ``--repeat`` rounds after a
warm-up round:

* LXT AttnLRP: forward and backward of the patched model (``inputs_embeds * grad``);
* relprop AttnLRP and CP-LRP: ``rp.lrp`` on the imported model (target: the last
  position's logit of one token);
* relprop's ``rp.gradient`` of the same logit.

Memory: each method once more in a fresh subprocess, the peak RSS over the RSS after
building the model and the input (as benchmarks/suite.py measures it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import _lxt_reference as reference  # noqa: E402
import suite  # noqa: E402

CONFIGS = {
    "gpt2": {"vocab_size": 1000, "n_positions": 128, "n_embd": 256, "n_layer": 4,
             "n_head": 4, "attn_implementation": "eager"},
    "llama": {"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 688,
              "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
              "max_position_embeddings": 128, "attn_implementation": "eager"},
}
TOKENS, TARGET = 64, 5
METHODS = ("LXT AttnLRP", "relprop AttnLRP", "relprop CP-LRP", "relprop rp.gradient")


def _setup(arch: str) -> tuple[Any, Any, Any]:
    import torch

    import relprop as rp

    torch.set_num_threads(2)
    hf = reference.build(arch, CONFIGS[arch], 0).to(torch.float32)
    embeds = reference.embeddings(CONFIGS[arch], TOKENS, 0).to(torch.float32)
    model = rp.from_torch(hf, example_input={"inputs_embeds": embeds})
    return hf, model, embeds


def _methods(arch: str, hf: Any, model: Any, embeds: Any) -> dict[str, Callable[[], Any]]:
    """The methods, LXT's patch applied (after the import)."""
    import relprop as rp

    efficient = reference._import_lxt()
    efficient.monkey_patch(reference.modeling(arch))
    for p in hf.parameters():
        p.requires_grad_(False)

    def lxt() -> Any:
        x = embeds.clone().requires_grad_(True)
        hf(inputs_embeds=x, use_cache=False).logits[0, -1, TARGET].backward()
        return x * x.grad

    def target(out: Any) -> Any:
        return out[:, -1, TARGET]

    attn, cp = rp.composites.AttnLRP(), rp.composites.CPLRP()
    return {
        "LXT AttnLRP": lxt,
        "relprop AttnLRP": lambda: rp.lrp(model, embeds, target=target, composite=attn),
        "relprop CP-LRP": lambda: rp.lrp(model, embeds, target=target, composite=cp),
        "relprop rp.gradient": lambda: rp.gradient(model, embeds, target=target),
    }


def _autograd(hf: Any, embeds: Any) -> float:
    """Median seconds of torch autograd's input gradient on the unpatched model."""
    def call() -> None:
        x = embeds.clone().requires_grad_(True)
        hf(inputs_embeds=x, use_cache=False).logits[0, -1, TARGET].backward()

    call()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(arch: str, repeat: int) -> dict[str, Any]:
    hf, model, embeds = _setup(arch)
    autograd = _autograd(hf, embeds)
    methods = _methods(arch, hf, model, embeds)
    results = {name: fn() for name, fn in methods.items()}  # warm-up round
    lxt = results["LXT AttnLRP"]
    relprop = results["relprop AttnLRP"]
    difference = float((relprop - lxt).abs().max() / lxt.abs().max())
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {"arch": arch, "config": CONFIGS[arch], "tokens": TOKENS, "autograd": autograd,
            "median": {name: statistics.median(t) for name, t in times.items()},
            "difference": difference}


def memory(arch: str, method: str) -> int:
    """Peak RSS (bytes) one call of ``method`` adds, in this (fresh) process."""
    hf, model, embeds = _setup(arch)
    call = _methods(arch, hf, model, embeds)[method]
    suite._reset_peak()
    before = suite._rss_bytes()
    call()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def _child(*args: str) -> Any:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict[str, Any], peaks: dict[str, int]) -> str:
    lxt = result["median"]["LXT AttnLRP"]
    config = ", ".join(f"{k}={v}" for k, v in result["config"].items()
                       if k != "attn_implementation")
    lines = [
        f"### {result['arch']} ({config}), {result['tokens']} tokens, batch 1, float32",
        "",
        f"torch autograd's input gradient on the unpatched model: "
        f"{result['autograd'] * 1e3:.1f} ms. relprop's AttnLRP relevance differs from "
        f"LXT's by {result['difference']:.2g} of the largest entry (float32).",
        "",
        "| method | median | vs LXT | extra peak memory |",
        "|---|---|---|---|",
    ]
    for name, seconds in result["median"].items():
        lines.append(f"| {name} | {seconds * 1e3:.1f} ms | {seconds / lxt:.2f}x | "
                     f"{peaks[name] / 2**20:.1f} MiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--table", help=argparse.SUPPRESS)  # child: one table
    parser.add_argument("--memory", nargs=2, help=argparse.SUPPRESS)  # child: arch, method
    args = parser.parse_args(argv)
    if args.table:
        print(json.dumps(table(args.table, args.repeat)))
        return
    if args.memory:
        print(json.dumps(memory(*args.memory)))
        return
    info = suite.machine_info()
    parts = [suite.format_machine(info, markdown=True), ""]
    for arch in args.arch:
        result = _child("--table", arch, "--repeat", str(args.repeat))
        peaks = {name: _child("--memory", arch, name) for name in METHODS}
        text = markdown(result, peaks)
        print(text, flush=True)
        parts.append(text)
    if args.markdown:
        args.markdown.write_text("\n".join(parts))


if __name__ == "__main__":
    main()
