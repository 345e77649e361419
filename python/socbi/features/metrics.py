"""Judging an embedding without training a classifier: the cosine k-NN probe.

DINO-style encoders are usually evaluated by a weighted k-nearest-neighbour
classifier on frozen features (Wu et al. 2018; Caron et al. 2021): each test
sample votes with its k most cosine-similar training samples, each vote
weighted by exp(similarity / temperature). numpy only, so it runs without torch.
"""
from __future__ import annotations

import numpy as np


def _rows(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} has shape {x.shape}; it must be 2-d (n_samples, dim)")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Accuracy of a similarity-weighted cosine k-NN classifier.

    Rows are L2-normalised here, so raw features may be passed. Ties in the
    vote go to the smallest label. Returns a float in [0, 1].

    Complexity: O(n_test * n_train * dim) time for the similarities plus
    O(n_test * n_train) for the top-k selection (argpartition), in chunks of
    ``chunk`` test rows so memory stays O(chunk * n_train).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}; it must be a positive integer such as 20")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r}; it must be > 0 (0.07 is the usual choice)")
    a = _rows("train_x", train_x)
    b = _rows("test_x", test_x)
    ya = np.asarray(train_y)
    yb = np.asarray(test_y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"train_x has dim {a.shape[1]} but test_x has dim {b.shape[1]}; they must match")
    if len(ya) != len(a) or len(yb) != len(b):
        raise ValueError(
            f"labels do not match rows: train_x {len(a)} vs train_y {len(ya)}, "
            f"test_x {len(b)} vs test_y {len(yb)}"
        )
    if len(a) == 0 or len(b) == 0:
        raise ValueError("train_x and test_x must both have at least one row")
    classes, ya_idx = np.unique(ya, return_inverse=True)
    k = min(k, len(a))
    correct = 0
    for start in range(0, len(b), chunk):
        sim = b[start:start + chunk] @ a.T                      # (c, n_train)
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]         # (c, k)
        w = np.exp(np.take_along_axis(sim, nn, axis=1) / temperature)
        votes = np.zeros((sim.shape[0], len(classes)), dtype=np.float64)
        np.add.at(votes, (np.repeat(np.arange(sim.shape[0]), k), ya_idx[nn].ravel()), w.ravel())
        pred = classes[np.argmax(votes, axis=1)]
        correct += int(np.sum(pred == yb[start:start + chunk]))
    return correct / len(b)
