"""Two engine options measured by hand, not part of ``suite.py`` (results in docs/benchmarks.md).

    python benchmarks/engine_options.py channels-last [--repeat 5]
    python benchmarks/engine_options.py jax-fusion [--repeat 5]

- ``channels-last``: torch autograd's input gradient, ``rp.gradient`` and EpsilonGammaBox
  with the module and the input in torch's default (contiguous) layout and in
  ``torch.channels_last`` (relprop shares the module's tensors, so its convolutions run in
  the layout they are given).
- ``jax-fusion``: jitted EpsilonGammaBox with the rule engine's fusion of terms off and on
  (``TermRule.fuse``: the terms that read one input as one call with their weights stacked
  along the outputs) against the jitted ``rp.gradient``.

Each on VGG-16 (64x64, batch 8) and ResNet-18 (112x112, batch 1, batch norms merged), the
networks of ``benchmarks/models.py``; medians of ``--repeat`` calls after one warm-up, the
methods of one line interleaved by rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import models
import torch

import relprop as rp

NETWORKS = [("VGG-16 64x64 batch 8", models.vgg16, (8, 3, 64, 64), False),
            ("ResNet-18 112x112 batch 1", models.resnet18, (1, 3, 112, 112), True)]


def _composite(resnet: bool) -> rp.composites.Composite:
    canonizers = [rp.canonizers.MergeBatchNorm()] if resnet else []
    return rp.composites.EpsilonGammaBox(low=models.LOW, high=models.HIGH,
                                         canonizers=canonizers)


def _medians(calls: dict[str, Callable[[], Any]], repeat: int,
             wait: Callable[[Any], Any] = lambda r: r) -> dict[str, float]:
    """Median milliseconds of each call, one warm-up each, rounds interleaved."""
    for call in calls.values():
        wait(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            wait(call())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def channels_last(repeat: int) -> None:
    for title, make, shape, resnet in NETWORKS:
        calls: dict[str, Callable[[], Any]] = {}
        for layout, fmt in (("contiguous", torch.contiguous_format),
                            ("channels-last", torch.channels_last)):
            net = make().eval().to(memory_format=fmt)
            x = models.inputs(shape).contiguous(memory_format=fmt)
            model, composite = rp.from_torch(net, x), _composite(resnet)

            def autograd(net: torch.nn.Module = net, x: torch.Tensor = x) -> Any:
                xg = x.clone().requires_grad_()
                return torch.autograd.grad(net(xg)[:, 0].sum(), xg)

            calls[f"{layout} autograd"] = autograd
            calls[f"{layout} rp.gradient"] = (
                lambda m=model, x=x: rp.gradient(m, x, target=0))
            calls[f"{layout} EpsilonGammaBox"] = (
                lambda m=model, x=x, c=composite: rp.lrp(m, x, target=0, composite=c))
        ms = _medians(calls, repeat)
        print(title)
        for layout in ("contiguous", "channels-last"):
            ag = ms[f"{layout} autograd"]
            print(f"  {layout:14s} autograd {ag:7.1f} ms  rp.gradient "
                  f"{ms[f'{layout} rp.gradient']:7.1f} ms  EpsilonGammaBox "
                  f"{ms[f'{layout} EpsilonGammaBox']:7.1f} ms "
                  f"({ms[f'{layout} EpsilonGammaBox'] / ag:.2f}x autograd)")


def jax_fusion(repeat: int) -> None:
    import jax

    from relprop.rules.terms import TermRule

    for title, make, shape, resnet in NETWORKS:
        x = models.inputs(shape)
        model = rp.from_torch(make().eval(), x).to("jax")
        xj = rp.asarray(x.numpy(), backend="jax")
        composite = _composite(resnet)
        calls: dict[str, Callable[[], Any]] = {}
        grad = jax.jit(lambda m, v: rp.gradient(m, v, target=0)).lower(model, xj).compile()
        calls["gradient"] = lambda g=grad, m=model, v=xj: g(m, v)
        for fuse in (False, True):  # the setting is read while tracing
            TermRule.fuse = fuse
            try:
                compiled = jax.jit(lambda m, v, c=composite: rp.lrp(m, v, target=0, composite=c)
                                   ).lower(model, xj).compile()
            finally:
                TermRule.fuse = False
            calls["fused" if fuse else "unfused"] = lambda f=compiled, m=model, v=xj: f(m, v)
        ms = _medians(calls, repeat, jax.block_until_ready)
        print(f"{title}: jitted rp.gradient {ms['gradient']:.1f} ms; EpsilonGammaBox "
              f"unfused {ms['unfused']:.1f} ms ({ms['unfused'] / ms['gradient']:.2f}x), "
              f"fused {ms['fused']:.1f} ms ({ms['fused'] / ms['gradient']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["channels-last", "jax-fusion"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"channels-last": channels_last, "jax-fusion": jax_fusion}[args.experiment](args.repeat)


if __name__ == "__main__":
    main()
