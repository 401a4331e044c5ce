"""Which real goes with which fake: nearest neighbours from the pool index, then one real per
fake unless reuse is allowed."""

from __future__ import annotations

import math

import numpy as np

from ldmdetect.engine.synris.index import PoolIndex

__all__ = ["greedy_assignment", "match_to_pool"]


def greedy_assignment(
    similarities: np.ndarray, candidates: np.ndarray, n_real: int
) -> tuple[np.ndarray, np.ndarray]:
    """One distinct real per fake, by descending similarity, from each fake's candidate list.

    ``similarities``/``candidates``: (n_fake, k) nearest reals per fake as FAISS returns them
    (candidate -1 = none). All (fake, real) candidate pairs are taken from the most similar
    down, each kept when neither side is matched yet. Returns (real index, similarity) per
    fake, -1 / NaN where all of a fake's candidates went to others (the caller fetches more).

    Greedy rather than an optimal assignment (scipy's ``linear_sum_assignment``): it never
    gives up a near-duplicate pair to raise the total similarity, which is the point of the
    protocol (each fake next to its closest look-alike still free), and it runs on the
    k-nearest candidate lists a large pool needs instead of a dense n_fake x n_real matrix.
    """
    n_fake, k = candidates.shape
    order = np.argsort(-similarities, axis=None, kind="stable")
    real_of = np.full(n_fake, -1, dtype=np.int64)
    sim_of = np.full(n_fake, math.nan, dtype=np.float64)
    taken = np.zeros(n_real, dtype=bool)
    left = n_fake
    for flat in order:
        fake, slot = divmod(int(flat), k)
        real = int(candidates[fake, slot])
        if real < 0 or real_of[fake] >= 0 or taken[real]:
            continue
        real_of[fake], sim_of[fake] = real, float(similarities[fake, slot])
        taken[real] = True
        left -= 1
        if left == 0:
            break
    return real_of, sim_of


def match_to_pool(
    pool: PoolIndex, fakes: np.ndarray, allow_reuse: bool, candidates: int
) -> tuple[np.ndarray, np.ndarray]:
    """(real row in ``pool``, cosine similarity) per fake embedding (unit rows of ``fakes``).

    With ``allow_reuse`` each fake takes its nearest real; otherwise :func:`greedy_assignment`
    over ``candidates`` nearest reals per fake, lengthening the lists until every fake has one.
    """
    n_real, n_fake = pool.index.ntotal, fakes.shape[0]
    if allow_reuse:
        sims, ids = pool.index.search(fakes, 1)
        return ids[:, 0].astype(np.int64), sims[:, 0].astype(np.float64)
    if n_fake > n_real:
        raise ValueError(
            f"{n_fake} fakes but only {n_real} readable reals in the pool: each real can be "
            "matched once; add reals or allow reuse (--allow-reuse)"
        )
    k = min(n_real, max(1, candidates))
    while True:
        sims, ids = pool.index.search(fakes, k)
        real_of, sim_of = greedy_assignment(sims, ids, n_real)
        # Fakes whose k candidates all went to others need a longer list; with k = n_real
        # every fake finds a free real, since there are at least as many reals as fakes.
        if (real_of >= 0).all() or k == n_real:
            return real_of, sim_of
        k = min(n_real, 4 * k)
