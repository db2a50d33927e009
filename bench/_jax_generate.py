"""The JAX peer's generation phases: greedy decoding and nucleus sampling of a token chain.

The token chain of `bench._workloads.GENERATE_PHASES`: at every inner step model B reads
``[IR[b, t], embedding of the previous token]`` (the start token's row at the start of a run in
reset mode, of a sample in carry mode), the head gives the logits over the V tokens, and the
picked token feeds the next step. One `jax.jit` runs model A, then one `jax.lax.scan` of the
same layouts as the other phases (`bench._jax_peer`): reset mode all ``batch * T`` runs as rows
for ``L`` steps, carry mode each sample's real steps laid end to end. B's first input projection
is split in two: IR's part once per ``(b, t)``, and the embedding's part as a table of ``V + 1``
rows computed once per call, so a step adds one gathered row instead of a matmul.

Greedy decoding takes the argmax (the lowest id on a tie, as ``chain.Greedy``); sampling draws
from the nucleus of ``softmax(logits / temperature)`` (`bench._workloads.SAMPLING`) with Gumbel
noise from one key per call, folded with the step, as ``chain.Sampler`` draws alike from its
seed at every call. Beam search (``generate-beam4``) is not written for JAX.

This module imports JAX; `bench._jax_peer` imports it only once JAX is known to be installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bench._jax_cells import GATE_BLOCKS, input_bias, stack_step, zero_states
from bench._jax_peer import LAYERS_OF, carry_inputs, flat_values, model_a
from bench._workloads import SAMPLING


def greedy(logits: Any, key: Any) -> Any:
    """The argmax of `logits` (n, V), int32 (n,); the lowest id on a tie."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def nucleus_sample(logits: Any, key: Any, temperature: float = 1.0, top_p: float = 1.0) -> Any:
    """A draw from ``softmax(logits / temperature)`` cut to its nucleus, by the Gumbel-max trick.

    The nucleus is the most likely tokens whose probabilities first sum to at least `top_p` (and
    any tied with its least likely one), as ``chain.Sampler(top_p=...)`` keeps them.

    Returns:
        int32 (n,) tokens.
    """
    logits = logits / temperature
    ranked = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
    probs = jax.nn.softmax(ranked, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # what the likelier ones sum to
    least = jnp.min(jnp.where(before < top_p, ranked, ranked[:, :1]), axis=-1, keepdims=True)
    noisy = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
    return jnp.argmax(jnp.where(logits >= least, noisy, -jnp.inf), axis=-1).astype(jnp.int32)


PICKS: dict[str, Callable[[Any, Any], Any]] = {
    "generate-greedy": greedy,
    "generate-sampling": functools.partial(nucleus_sample, **SAMPLING),
}


def _blocks(matrix: Any, kind: str) -> tuple[Any, ...]:
    return tuple(jnp.split(matrix, GATE_BLOCKS[kind], axis=-1))


def padded_tokens(cell: str, phase: str, params: dict[str, Any], x: Any, steps: Any, key: Any, *, bound: int,
                  carry: bool) -> Any:  # fmt: skip
    """Every padded step's token, (bound, rows), in the layout of `bench._jax_peer.padded_outputs`."""
    kinds, layers, pick = LAYERS_OF[cell], params["b"], PICKS[phase]
    ir = model_a(params["a"], x)
    big_t, batch, h = ir.shape
    first = layers[0]
    from_ir = ir.reshape(big_t * batch, h) @ first["kernel"][:h] + input_bias(first)  # once per (b, t)
    by_token = _blocks(params["embedding"] @ first["kernel"][h:], kinds[0])  # (V + 1, H) per gate block
    inputs = carry_inputs(from_ir, steps, bound) if carry else None
    constant = None if carry else _blocks(from_ir, kinds[0])
    rows = batch if carry else big_t * batch
    vocab = params["head"]["kernel"].shape[-1]

    def step(state: tuple[Any, Any], per: tuple[Any, Any]) -> tuple[tuple[Any, Any], Any]:
        states, token = state
        index, per_step = per
        from_run = _blocks(per_step, kinds[0]) if carry else constant
        xp = tuple(run + table[token] for run, table in zip(from_run, by_token))
        out, states, _, _ = stack_step(kinds, layers, xp, states)
        token = pick(out @ params["head"]["kernel"] + params["head"]["bias"], jax.random.fold_in(key, index))
        return (states, token), token

    start = (zero_states(kinds, rows, h), jnp.full((rows,), vocab, jnp.int32))
    return jax.lax.scan(step, start, (jnp.arange(bound), inputs), length=bound)[1]


def generate_program(cell: str, carry: bool, phase: str) -> Any:
    """``jit(params, x, steps, key, count=, bound=) -> (tokens, their sum)``: every real step's
    token, int32 (count,) in (sample, t, k) order, as ``net.generate(...).flat_values``."""

    def generate(params: Any, x: Any, steps: Any, key: Any, *, count: int, bound: int) -> tuple[Any, Any]:
        tokens = padded_tokens(cell, phase, params, x, steps, key, bound=bound, carry=carry)
        flat = flat_values(tokens[..., None], steps, carry, count)[:, 0]
        return flat, jnp.sum(flat)

    return jax.jit(generate, static_argnames=("count", "bound"))
