r"""Local linear regions of ReLU networks: identity, ray interpolation, random walks.

A ReLU network restricted to the inputs that share one *activation pattern* (which ReLU
units are on, :func:`~relprop.dtd.activation_pattern`) is affine: one gradient, one bias.
That set, the input's *local linear region*, is a convex polytope (an intersection of the
half-spaces :math:`\pm z_u(x) > 0` of every unit, each :math:`z_u` affine while the
pattern is fixed). Deep Taylor Decomposition looks for root points there, where the
first-order Taylor expansion of the network is exact.

This module finds points of the region around given inputs, batched over inputs, rays and
chains, on every array backend:

- :func:`sample_interpolation`: random rays from the input, each followed to the region's
  edge by bisection;
- :func:`sample_metropolis_hastings`: a random walk that only moves inside the region, its
  step size adapted towards a target acceptance rate;
- :func:`same_region` and :func:`region_keys`: whether points share a region, and hashable
  region identities (used as cache keys by the root finders).

Random numbers come from a :class:`numpy.random.Generator` (seeded by the caller; the
global random state is never touched) and are moved to the input's library and device
once per draw, so an experiment gives the same numbers on every backend; the data never
goes the other way. The one thing that crosses to the host is the activation pattern
behind a region's cache key (:func:`region_keys`: a dict key must be a host object).
The models are those of ``rp.lrp`` (an :class:`~relprop.Sequential`, or a torch module,
converted once and cached), and the inputs pass ``rp.lrp``'s checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from relprop._checks import check_input
from relprop._placement import from_host, placement
from relprop._progress import progress_bar
from relprop._xp import Array, to_numpy
from relprop.dtd._common import Seed, as_chain, check_points, generator, renamed_keyword
from relprop.dtd.network import pattern_fn
from relprop.lrp import gradient
from relprop.model import Sequential

__all__ = [
    "InterpolationResult",
    "MetropolisHastingsResult",
    "region_keys",
    "same_region",
    "sample_interpolation",
    "sample_metropolis_hastings",
]


_NOISE_BLOCK = 1 << 22
"""Most random numbers one host-to-device transfer of the random walk carries (32 MiB of
float64)."""


def _norm(v: Array, xp: ModuleType) -> Array:
    """Euclidean norm over the last axis."""
    return xp.sqrt(xp.sum(v * v, axis=-1))


# --- region identity ----------------------------------------------------------------------


def region_keys(model: object, x: Array, start: int = 0) -> list[bytes]:
    """One hashable identity per sample: its activation pattern from layer ``start`` on.

    Two inputs get the same key exactly when :func:`same_region` says so.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=3, input_size=4, hidden_size=6, output_size=1, seed=0,
    ...             backend="numpy")
    >>> x = np.abs(np.random.default_rng(0).normal(size=(2, 4)))
    >>> keys = region_keys(model, np.concatenate([x, x]))
    >>> keys[0] == keys[2], len(keys)
    (True, 4)
    """
    chain = as_chain(model, x if start == 0 else None)
    xp = check_points(chain, x)
    return pattern_keys(pattern_fn(chain, start), x, xp)


def pattern_keys(pattern: Callable[[Array, ModuleType], Array], x: Array,
                 xp: ModuleType) -> list[bytes]:
    """:func:`region_keys` with the pattern function of :func:`~relprop.dtd.network.pattern_fn`.

    The keys index a Python dict (the root finders' region cache), so they have to be
    hashable host objects: the activation pattern, booleans only, is the one thing that
    crosses to the host here (one ``(batch, units)`` transfer per lookup, packed 8 units a
    byte); no array library hashes rows on the device, and deciding whether a region needs
    a search is host control flow anyway.
    """
    bits = np.packbits(np.asarray(to_numpy(pattern(x, xp)), dtype=bool), axis=1)
    return [row.tobytes() for row in bits]


def _pattern_test(chain: Sequential, x: Array, start: int,
                  xp: ModuleType) -> Callable[[Array], Array]:
    """``inside(points)``: for points ``(batch, m, features)``, whether each has the
    activation pattern of its sample of ``x`` (``(batch, m)`` booleans)."""
    pattern = pattern_fn(chain, start)
    reference = pattern(x, xp)  # (batch, units)

    def inside(points: Array) -> Array:
        batch, m, features = points.shape
        if reference.shape[1] == 0:  # no ReLU above: one region, everything is inside
            return xp.ones((batch, m), dtype=xp.bool, **placement(points, xp))
        flat = xp.reshape(points, (batch * m, features))
        found = xp.reshape(pattern(flat, xp), (batch, m, reference.shape[1]))
        return xp.all(found == xp.expand_dims(reference, axis=1), axis=-1)

    return inside


def _gradient_test(
    chain: Sequential, x: Array, start: int, output: int, atol: float, xp: ModuleType
) -> Callable[[Array], Array]:
    """Like :func:`_pattern_test`, comparing the input gradients of ``output``
    (``rp.gradient`` of ``chain[start:]``) within ``atol`` instead (a region of the
    explained output's affine pieces)."""
    part = chain[start:]
    reference = gradient(part, x, output)

    def inside(points: Array) -> Array:
        batch, m, features = points.shape
        flat = xp.reshape(points, (batch * m, features))
        grad = xp.reshape(gradient(part, flat, output), (batch, m, features))
        return xp.all(xp.abs(grad - xp.expand_dims(reference, axis=1)) <= atol, axis=-1)

    return inside


def region_test(
    chain: Sequential, x: Array, start: int, output: int | None, atol: float, xp: ModuleType
) -> Callable[[Array], Array]:
    """``inside(points (batch, m, features)) -> (batch, m)``: the criterion of
    :func:`same_region`, for a checked chain and input (no checks)."""
    if output is None:
        return _pattern_test(chain, x, start, xp)
    return _gradient_test(chain, x, start, output, atol, xp)


def same_region(
    model: object,
    a: Array,
    b: Array,
    start: int = 0,
    *,
    output: int | None = None,
    atol: float = 1e-8,
) -> Array:
    r"""Whether points lie in the local linear region of their input.

    Parameters
    ----------
    model
        A ReLU network (an :class:`~relprop.Sequential`, or a torch module).
    a
        Inputs ``(batch, features)`` entering layer ``start``.
    b
        Points ``(batch, features)`` (one per input) or ``(batch, m, features)`` (``m`` per
        input), entering layer ``start``.
    start
        The layer the points enter; only ReLUs from there on count.
    output
        ``None`` (default): same region means the same activation pattern (then the whole
        network from ``start`` on is one affine map on the segment between the points).
        An output index: the input gradients of that output agree within ``atol`` (the
        criterion of the DTD seed notebooks: the root "has the input's gradient").
    atol
        Absolute tolerance of the gradient comparison.

    Returns
    -------
    array
        Booleans, ``(batch,)`` or ``(batch, m)``.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=3, input_size=4, hidden_size=6, output_size=1, seed=0,
    ...             backend="numpy")
    >>> a = np.abs(np.random.default_rng(0).normal(size=(3, 4)))
    >>> same_region(model, a, 1.000001 * a).tolist(), same_region(model, a, -a).tolist()
    ([True, True, True], [False, False, False])
    """
    chain = as_chain(model, a if start == 0 else None)
    xp = check_points(chain, a, "a")
    chain.namespace(a=a, b=b)
    single = len(b.shape) == 2
    points = xp.expand_dims(b, axis=1) if single else b
    if len(points.shape) != 3 or points.shape[0] != a.shape[0] or points.shape[2] != a.shape[1]:
        raise ValueError(
            f"b must have shape {tuple(a.shape)} or ({a.shape[0]}, m, {a.shape[1]}); got "
            f"{tuple(b.shape)}."
        )
    check_input(b, xp, chain.named_params(), "b")
    inside = region_test(chain, a, start, output, atol, xp)(points)
    return inside[:, 0] if single else inside


# --- interpolation along rays -------------------------------------------------------------


@dataclass
class InterpolationResult:
    """Points on random rays from each input, at the edge of its local linear region.

    Attributes
    ----------
    points
        ``(batch, rays, features)``: :math:`x + t\\,u`, the farthest point of each ray
        known to be inside the region (every point between it and :math:`x` is inside
        too: the region is convex).
    t
        ``(batch, rays)``: the distances :math:`t` from the input (the rays have unit
        length).
    directions
        ``(batch, rays, features)``: the unit directions :math:`u`.
    bounded
        ``(batch, rays)``: whether the ray left the region (``False``: it was stopped by
        ``max_radius`` or the non-negative orthant while still inside).
    inside
        ``(batch, rays)``: whether each returned point was verified inside the region.
    """

    points: Array
    t: Array
    directions: Array
    bounded: Array
    inside: Array


def _directions(rng: np.random.Generator, x: Array, rays: int, nonnegative: bool,
                xp: ModuleType) -> Array:
    """Unit directions ``(batch, rays, features)``: normal draws of the NumPy generator
    (the same numbers on every backend), moved to ``x``'s device once."""
    batch, features = x.shape
    u = from_host(rng.standard_normal((batch, rays, features)), x, xp)
    if nonnegative:
        # on a face of the orthant (x_i = 0) a ray may only go inwards: reflect it
        u = xp.where(xp.expand_dims(x, axis=1) == 0, xp.abs(u), u)
    length = _norm(u, xp)
    return u / xp.expand_dims(xp.where(length > 0, length, 1.0), axis=-1)


def _radius(x: Array, max_radius: float | None, xp: ModuleType) -> Array:
    """Per-sample radius: ``max_radius``, or ``10 max(1, |x|)``."""
    if max_radius is not None:
        if not max_radius > 0:
            raise ValueError(f"max_radius must be > 0; got {max_radius}.")
        return xp.full((x.shape[0],), float(max_radius), dtype=x.dtype, **placement(x, xp))
    return 10.0 * xp.maximum(_norm(x, xp), xp.ones((x.shape[0],), dtype=x.dtype,
                                                   **placement(x, xp)))


def _orthant_cap(x: Array, u: Array, xp: ModuleType) -> Array:
    """Largest t with ``x + t u >= 0`` per ray, ``(batch, rays)`` (inf where unbounded)."""
    x_e = xp.expand_dims(x, axis=1)
    negative = u < 0
    safe = xp.where(negative, u, -xp.ones_like(u))
    ratio = xp.where(negative, -x_e / safe, xp.full_like(u, math.inf))
    return xp.min(ratio, axis=-1)


def check_nonnegative(x: Array, xp: ModuleType) -> None:
    if not bool(xp.all(x >= 0)):
        raise ValueError(
            "enforce_nonnegative=True needs non-negative inputs (the walk stays in the "
            "non-negative orthant); x has negative entries."
        )


def sample_interpolation(
    model: object,
    x: Array,
    *,
    start: int = 0,
    n_rays: int = 50,
    n_refinement_steps: int = 40,
    max_radius: float | None = None,
    enforce_nonnegative: bool = False,
    output: int | None = None,
    atol: float = 1e-8,
    seed: Seed = 0,
    progress: bool | None = False,
    **deprecated: Any,
) -> InterpolationResult:
    r"""Follow random rays from each input to the edge of its local linear region.

    For each input :math:`x` and unit direction :math:`u` (``n_rays`` per input, drawn
    from a normal distribution by a NumPy generator and moved to the input's device once),
    the points :math:`x + t u` inside
    the region form an interval :math:`0 \le t < t^*` (the region is convex). If the
    ray's end :math:`x + T u` (:math:`T` its length limit) is inside, the whole ray is;
    otherwise ``n_refinement_steps`` bisection steps narrow :math:`t^*` down to
    :math:`T 2^{-\mathrm{steps}}`, and the returned point is the inner end of the final
    bracket. All rays of all inputs are evaluated in one batch per step.

    Parameters
    ----------
    model
        A ReLU network (an :class:`~relprop.Sequential`, or a torch module).
    x
        Inputs ``(batch, features)`` entering layer ``start``.
    start
        The layer the inputs enter; the region is that of ``model[start:]``.
    n_rays
        Rays per input.
    n_refinement_steps
        Bisection steps (each halves the uncertainty of :math:`t^*`).
    max_radius
        Length limit :math:`T` of every ray; default :math:`10 \max(1, \|x\|)`.
    enforce_nonnegative
        Keep every point in the non-negative orthant: rays stop at its boundary, and on a
        face (:math:`x_i = 0`) they point inwards. Needs ``x >= 0``.
        (``enforce_non_negative=`` is a deprecated spelling.)
    output, atol
        Region criterion, as in :func:`same_region` (default: activation pattern).
    seed
        Seed or :class:`numpy.random.Generator` of the ray directions.
    progress
        Show a tqdm progress bar: ``True`` (needs tqdm, ``relprop[progress]``), ``None``
        only on a terminal, ``False`` (default) silent.

    Returns
    -------
    InterpolationResult

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=3, input_size=4, hidden_size=6, output_size=1, seed=0,
    ...             backend="numpy")
    >>> x = np.abs(np.random.default_rng(0).normal(size=(2, 4)))
    >>> res = sample_interpolation(model, x, n_rays=5, enforce_nonnegative=True)
    >>> res.points.shape, bool(res.inside.all()), bool((res.points >= 0).all())
    ((2, 5, 4), True, True)
    >>> bool(same_region(model, x, res.points).all())
    True
    """
    enforce_nonnegative = renamed_keyword(deprecated, "enforce_non_negative",
                                          "enforce_nonnegative", enforce_nonnegative,
                                          "sample_interpolation")
    chain = as_chain(model, x if start == 0 else None)
    xp = check_points(chain, x)
    if n_rays < 1 or n_refinement_steps < 0:
        raise ValueError("n_rays must be >= 1 and n_refinement_steps >= 0.")
    if enforce_nonnegative:
        check_nonnegative(x, xp)
    return interpolate(chain, x, xp, start=start, n_rays=n_rays,
                       n_refinement_steps=n_refinement_steps, max_radius=max_radius,
                       enforce_nonnegative=enforce_nonnegative, output=output, atol=atol,
                       seed=seed, progress=progress)


def interpolate(
    chain: Sequential,
    x: Array,
    xp: ModuleType,
    *,
    start: int,
    n_rays: int,
    n_refinement_steps: int,
    max_radius: float | None,
    enforce_nonnegative: bool,
    output: int | None,
    atol: float,
    seed: Seed,
    progress: bool | None,
) -> InterpolationResult:
    """:func:`sample_interpolation` of a checked chain and input (the root finders')."""
    rng = generator(seed)
    inside_fn = region_test(chain, x, start, output, atol, xp)
    u = _directions(rng, x, n_rays, enforce_nonnegative, xp)
    x_e = xp.expand_dims(x, axis=1)  # (batch, 1, features)
    ones = xp.ones(u.shape[:2], dtype=x.dtype, **placement(x, xp))
    cap = xp.expand_dims(_radius(x, max_radius, xp), axis=1) * ones
    if enforce_nonnegative:
        cap = xp.minimum(cap, _orthant_cap(x, u, xp))

    def at(t: Array) -> Array:  # (batch, rays[, k]) -> points
        return x_e + xp.expand_dims(t, axis=-1) * u

    def clip(p: Array) -> Array:
        return xp.maximum(p, xp.zeros_like(p)) if enforce_nonnegative else p

    bar = progress_bar(progress, n_refinement_steps + 1, "interpolation")
    # inside is monotone along a ray (the region is convex): bisection on [0, cap]
    whole = inside_fn(clip(at(cap)))
    lo = xp.where(whole, cap, xp.zeros_like(cap))
    hi = cap
    bar.update(1)
    for _ in range(n_refinement_steps):
        mid = 0.5 * (lo + hi)
        ok = inside_fn(clip(at(mid))) | whole
        lo = xp.where(ok, mid, lo)
        hi = xp.where(ok, hi, mid)
        bar.update(1)
    bar.close()
    points = clip(at(lo))
    return InterpolationResult(points=points, t=lo, directions=u, bounded=~whole,
                               inside=inside_fn(points))


# --- Metropolis-Hastings ------------------------------------------------------------------


@dataclass
class MetropolisHastingsResult:
    """Samples of a random walk constrained to each input's local linear region.

    Attributes
    ----------
    samples
        ``(batch, chains * n_steps, features)``: the chains' positions after every step
        past the warm-up, chain-major (all steps of chain 0 first). Repeated positions
        are rejected moves.
    acceptance
        ``(batch, chains)``: acceptance rate of each chain past the warm-up.
    step_size
        ``(batch, chains)``: each chain's final proposal scale.
    """

    samples: Array
    acceptance: Array
    step_size: Array


def sample_metropolis_hastings(
    model: object,
    x: Array,
    *,
    start: int = 0,
    n_chains: int = 10,
    n_steps: int = 50,
    n_warmup: int = 20,
    step_size: float = 0.1,
    target_acceptance: float = 0.3,
    adaptation_rate: float = 0.5,
    max_radius: float | None = None,
    enforce_nonnegative: bool = False,
    output: int | None = None,
    atol: float = 1e-8,
    seed: Seed = 0,
    progress: bool | None = False,
    **deprecated: Any,
) -> MetropolisHastingsResult:
    r"""Random walks inside each input's local linear region (Metropolis-Hastings).

    The target density is uniform on the region (intersected with the ball of radius
    ``max_radius`` around the input, and with the non-negative orthant if
    ``enforce_nonnegative``). Every chain starts at its input; a step proposes
    :math:`p' = p + \sigma \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`
    (reflected at the orthant's faces, :math:`p' \leftarrow |p'|`, which keeps the proposal
    symmetric), and accepts it exactly when :math:`p'` lies in the region: for a uniform
    target and a symmetric proposal that is the Metropolis-Hastings acceptance rule.
    The step size adapts per chain, :math:`\sigma \leftarrow \sigma
    \exp(\eta (a - a^*))` with :math:`a \in \{0, 1\}` the step's acceptance and
    :math:`a^*` = ``target_acceptance``, during warm-up and sampling alike (the samples are
    candidates for root search, not posterior draws; with ``adaptation_rate=0`` the walk
    is a plain Metropolis chain). All chains of all inputs move in one batch per step;
    the noise of every step is drawn by the NumPy generator at once and moved to the
    input's device in one transfer.

    Parameters
    ----------
    model
        A ReLU network (an :class:`~relprop.Sequential`, or a torch module).
    x
        Inputs ``(batch, features)`` entering layer ``start``.
    start
        The layer the inputs enter; the region is that of ``model[start:]``.
    n_chains, n_steps, n_warmup
        Chains per input, recorded steps per chain, and discarded steps before them.
    step_size
        Initial :math:`\sigma`, relative to the input's root-mean-square entry (at least 1):
        :math:`\sigma_0 = \mathrm{step\_size} \cdot \max(1, \|x\| / \sqrt{d})`.
    target_acceptance, adaptation_rate
        :math:`a^*` and :math:`\eta` of the step-size adaptation.
    max_radius
        Radius of the ball around the input the walk stays in; default
        :math:`10 \max(1, \|x\|)`.
    enforce_nonnegative
        Stay in the non-negative orthant (needs ``x >= 0``; ``enforce_non_negative=`` is
        a deprecated spelling).
    output, atol
        Region criterion, as in :func:`same_region` (default: activation pattern).
    seed
        Seed or :class:`numpy.random.Generator` of the proposals.
    progress
        Show a tqdm progress bar: ``True`` (needs tqdm, ``relprop[progress]``), ``None``
        only on a terminal, ``False`` (default) silent.

    Returns
    -------
    MetropolisHastingsResult

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=3, input_size=4, hidden_size=6, output_size=1, seed=0,
    ...             backend="numpy")
    >>> x = np.abs(np.random.default_rng(0).normal(size=(2, 4)))
    >>> res = sample_metropolis_hastings(model, x, n_chains=3, n_steps=10,
    ...                                  enforce_nonnegative=True)
    >>> res.samples.shape, bool((res.samples >= 0).all())
    ((2, 30, 4), True)
    >>> bool(same_region(model, x, res.samples).all())
    True
    """
    enforce_nonnegative = renamed_keyword(deprecated, "enforce_non_negative",
                                          "enforce_nonnegative", enforce_nonnegative,
                                          "sample_metropolis_hastings")
    chain = as_chain(model, x if start == 0 else None)
    xp = check_points(chain, x)
    if n_chains < 1 or n_steps < 1 or n_warmup < 0:
        raise ValueError("n_chains and n_steps must be >= 1 and n_warmup >= 0.")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must be in (0, 1); got {target_acceptance}.")
    if not step_size > 0 or adaptation_rate < 0:
        raise ValueError("step_size must be > 0 and adaptation_rate >= 0.")
    if enforce_nonnegative:
        check_nonnegative(x, xp)
    return random_walk(chain, x, xp, start=start, n_chains=n_chains, n_steps=n_steps,
                       n_warmup=n_warmup, step_size=step_size,
                       target_acceptance=target_acceptance, adaptation_rate=adaptation_rate,
                       max_radius=max_radius, enforce_nonnegative=enforce_nonnegative,
                       output=output, atol=atol, seed=seed, progress=progress)


def random_walk(
    chain: Sequential,
    x: Array,
    xp: ModuleType,
    *,
    start: int,
    n_chains: int,
    n_steps: int,
    n_warmup: int,
    step_size: float,
    target_acceptance: float,
    adaptation_rate: float,
    max_radius: float | None,
    enforce_nonnegative: bool,
    output: int | None,
    atol: float,
    seed: Seed,
    progress: bool | None,
) -> MetropolisHastingsResult:
    """:func:`sample_metropolis_hastings` of a checked chain and input (the root finders')."""
    rng = generator(seed)
    inside_fn = region_test(chain, x, start, output, atol, xp)
    batch, features = x.shape
    total = n_warmup + n_steps
    # the steps' noise from the NumPy generator (the same numbers on every backend, as if
    # drawn step by step), moved to the device in few transfers of at most _NOISE_BLOCK
    # numbers each (all at once for small walks)
    per_block = max(1, _NOISE_BLOCK // (batch * n_chains * features))
    noise = None
    radius = xp.expand_dims(_radius(x, max_radius, xp), axis=1)  # (batch, 1)
    x_e = xp.expand_dims(x, axis=1)
    position = x_e * xp.ones((batch, n_chains, 1), dtype=x.dtype, **placement(x, xp))
    scale = step_size * xp.maximum(_norm(x, xp) / math.sqrt(features),
                                   xp.ones((batch,), dtype=x.dtype, **placement(x, xp)))
    sigma = xp.expand_dims(scale, axis=1) * xp.ones((batch, n_chains), dtype=x.dtype,
                                                    **placement(x, xp))
    accepted = xp.zeros((batch, n_chains), dtype=x.dtype, **placement(x, xp))
    samples = []
    bar = progress_bar(progress, total, "metropolis-hastings")
    for step in range(total):
        if step % per_block == 0:
            size = min(per_block, total - step)
            noise = from_host(rng.standard_normal((size, batch, n_chains, features)), x, xp)
        assert noise is not None
        proposal = position + xp.expand_dims(sigma, axis=-1) * noise[step % per_block, ...]
        if enforce_nonnegative:
            proposal = xp.abs(proposal)
        ok = inside_fn(proposal) & (_norm(proposal - x_e, xp) <= radius)
        position = xp.where(xp.expand_dims(ok, axis=-1), proposal, position)
        ok_f = xp.astype(ok, x.dtype)
        sigma = sigma * xp.exp(adaptation_rate * (ok_f - target_acceptance))
        if step >= n_warmup:
            samples.append(position)
            accepted = accepted + ok_f
        bar.update(1)
    bar.close()
    stacked = xp.stack(samples, axis=2)  # (batch, chains, steps, features)
    return MetropolisHastingsResult(
        samples=xp.reshape(stacked, (batch, n_chains * n_steps, features)),
        acceptance=accepted / n_steps,
        step_size=sigma,
    )
