"""SynRIS: pair every generated image with the real photo that looks most like it.

FakeInversion (Cazenavette et al., CVPR 2024) evaluates detectors on fakes next to real images
found by reverse image search for each fake, so that a detector cannot score well by telling
themes apart (generated cats vs. a real set of street scenes). This package is a local reverse
image search:

1. embed the real pool (``ldmdetect.features.embeddings``; CLIP by default) into a FAISS
   inner-product index over unit vectors, i.e. cosine similarity, saved as ``index.faiss`` with
   the pool's file list (``pool.json``) and reused while the pool and the embedder are the same;
2. embed the fakes and look up each one's nearest reals;
3. assign: with ``allow_reuse`` every fake gets its nearest real; otherwise a real is used at
   most once, assigned greedily by descending similarity (see :func:`greedy_assignment`);
4. write ``pairs.csv`` (fake, real, similarity), ``contact_sheet.png`` and ``synris.json``.

Pairs can also be given as JSONL (``{"fake": path, "real": path_or_url}`` per line, e.g. a
released SynRIS list); nothing is downloaded: entries that are null, missing, URLs, unreadable
or not images are skipped and counted by reason.

The package, one job per module: :mod:`.index` (embedding and the FAISS pool index),
:mod:`.assign` (nearest reals and the one-real-per-fake assignment), :mod:`.pairs` (given
pairs from JSONL), :mod:`.sheet` (the contact sheet), :mod:`.run` (a run and its outputs) and
:mod:`.row` (the demo's matched-vs-unmatched evaluation row).

``ldmdetect evaluate --pairs pairs.csv`` then reports the detector's AUC on the matched reals
next to its AUC on an unmatched real set (:func:`ldmdetect.engine.evaluate.evaluate`).
"""

from ldmdetect.engine.synris.assign import greedy_assignment
from ldmdetect.engine.synris.index import PoolIndex, build_pool_index, embed_files
from ldmdetect.engine.synris.pairs import GivenPairs, read_pairs_jsonl
from ldmdetect.engine.synris.row import SynRISRow, synris_row
from ldmdetect.engine.synris.run import SynRISConfig, SynRISResult, run_synris
from ldmdetect.engine.synris.sheet import write_contact_sheet
from ldmdetect.io.pairs import Pair, read_pairs_csv, write_pairs_csv

__all__ = [
    "GivenPairs",
    "Pair",
    "PoolIndex",
    "SynRISConfig",
    "SynRISResult",
    "SynRISRow",
    "build_pool_index",
    "embed_files",
    "greedy_assignment",
    "read_pairs_csv",
    "read_pairs_jsonl",
    "run_synris",
    "synris_row",
    "write_contact_sheet",
    "write_pairs_csv",
]
