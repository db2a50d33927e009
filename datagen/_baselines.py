"""Baselines of an imported dataset, fitted on its training samples and scored on its held-out ones.

For the tokens: a unigram and a bigram of the token before, each with add-k smoothing, in nats
per token. For the count of tokens per outer step: the most frequent count, and a multinomial
logistic regression on ``x[b, t]``, by accuracy. Every choice of smoothing or regularisation is
made on a validation part of the training samples (:data:`VALIDATION`), never on the held-out ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

K_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""The add-k values tried for the unigram and the bigram."""

L2_GRID = (1e-3, 1e-2, 1e-1)
"""The L2 penalties (per training step, on the weights, not the biases) tried for the regression."""

VALIDATION = "the training chorales' samples split by chorale: the last tenth of the training chorales in the split's order"


class Sequences(NamedTuple):
    """The scored tokens of a split and the token before each (``vocab_size`` where none is)."""

    tokens: np.ndarray
    previous: np.ndarray


def sequences(steps: np.ndarray, tokens: np.ndarray, vocab_size: int, skip: int | None = None) -> Sequences:
    """Each sample's tokens in order, each with the token before it in the sample.

    Args:
        steps: (n, T) tokens per outer step.
        tokens: (sum(steps),) in (sample, t, k) order.
        vocab_size: ``V``; the first token of a sample follows the start context ``V``.
        skip: a token left out, of the targets and the contexts (an end token), or None.
    """
    sample = np.repeat(np.arange(len(steps)), steps.sum(axis=1))
    keep = np.ones(len(tokens), bool) if skip is None else tokens != skip
    tokens, sample = tokens[keep].astype(np.int64), sample[keep]
    previous = np.concatenate([[vocab_size], tokens[:-1]])
    first = np.concatenate([[True], sample[1:] != sample[:-1]])
    return Sequences(tokens, np.where(first, vocab_size, previous))


def _unigram_log_probs(train: Sequences, size: int, k: float) -> np.ndarray:
    counts = np.bincount(train.tokens, minlength=size).astype(np.float64)
    return np.log((counts + k) / (counts.sum() + k * size))


def _bigram_log_probs(train: Sequences, size: int, k: float) -> np.ndarray:
    """(size + 1, size): row ``u`` is log P(next | u); row ``size`` is the start context's."""
    counts = np.zeros((size + 1, size))
    np.add.at(counts, (train.previous, train.tokens), 1.0)
    return np.log((counts + k) / (counts.sum(axis=1, keepdims=True) + k * size))


def _cross_entropy(log_probs: np.ndarray, data: Sequences, bigram: bool) -> float:
    picked = log_probs[data.previous, data.tokens] if bigram else log_probs[data.tokens]
    return float(-picked.mean())


def token_baselines(fit: Sequences, validation: Sequences, train: Sequences, heldout: Sequences,
                    size: int) -> dict[str, Any]:  # fmt: skip
    """The unigram's and the bigram's held-out cross-entropy, nats per token.

    Args:
        fit, validation: the training tokens split in two, to choose ``k``.
        train: all training tokens, which the chosen model is refitted on.
        heldout: the tokens scored.
        size: the tokens a model spreads its probability over.
    """
    figures = {}
    for name, fitter, bigram in (("unigram", _unigram_log_probs, False), ("bigram", _bigram_log_probs, True)):
        scores = [_cross_entropy(fitter(fit, size, k), validation, bigram) for k in K_GRID]
        k = K_GRID[int(np.argmin(scores))]
        figures[name] = {"cross_entropy": _cross_entropy(fitter(train, size, k), heldout, bigram), "k": k,
                         "validation_cross_entropy": min(scores)}  # fmt: skip
    return figures


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _design(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)


def fit_logistic(x: np.ndarray, counts: np.ndarray, classes: int, l2: float) -> np.ndarray:
    """Multinomial logistic regression by L-BFGS: weights (features + 1, classes), the last row
    the biases, minimising the mean log loss plus ``l2 / 2`` times the squared weights."""
    from scipy import optimize  # here, so that `import datagen` does not load scipy

    design = _design(x)
    onehot = np.eye(classes)[counts]
    penalty = np.ones((design.shape[1], 1))
    penalty[-1] = 0.0

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weights = flat.reshape(design.shape[1], classes)
        logits = design @ weights
        log_probs = _log_softmax(logits)
        value = -np.mean(np.sum(onehot * log_probs, axis=1)) + 0.5 * l2 * np.sum(penalty * weights**2)
        gradient = design.T @ (np.exp(log_probs) - onehot) / len(design) + l2 * penalty * weights
        return value, gradient.ravel()

    start = np.zeros(design.shape[1] * classes)
    found = optimize.minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 200})
    return found.x.reshape(design.shape[1], classes)


def _scores(weights: np.ndarray, x: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss in nats) of a fitted regression."""
    logits = _design(x) @ weights
    log_probs = _log_softmax(logits)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == counts))
    return accuracy, float(-np.mean(log_probs[np.arange(len(counts)), counts]))


def count_baselines(fit: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
                    train: tuple[np.ndarray, np.ndarray], heldout: tuple[np.ndarray, np.ndarray],
                    classes: int) -> dict[str, Any]:  # fmt: skip
    """The most frequent count's and the regression's held-out accuracy.

    Args:
        fit, validation, train, heldout: ``(x (r, in), counts (r,))`` of the outer steps of each
            part, as in :func:`token_baselines`.
        classes: the counts are in ``[0, classes)``.
    """
    majority = int(np.argmax(np.bincount(train[1], minlength=classes)))
    losses = [_scores(fit_logistic(*fit, classes, l2), *validation)[1] for l2 in L2_GRID]
    l2 = L2_GRID[int(np.argmin(losses))]
    accuracy, log_loss = _scores(fit_logistic(*train, classes, l2), *heldout)
    return {
        "majority": {"count": majority, "accuracy": float(np.mean(heldout[1] == majority))},
        "logistic": {"accuracy": accuracy, "cross_entropy": log_loss, "l2": l2},
    }
