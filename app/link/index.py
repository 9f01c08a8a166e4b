"""Nearest-neighbour search over camera-centred tracklet features: online candidates and the batch graph.

faiss (faiss-cpu) does the search, with one recipe for both uses (`_ivf_index`): an exact flat scan for small
sets, an inverted file (IVF-Flat, inner product, about 2 sqrt(n) lists) above `FLAT_MAX`. Measured on
100,000 synthetic 512-d tracklets (8 per person) on our shared 2-core CPU: HNSW (M=16, efConstruction=40)
took 81 s to build and 27 s to search every tracklet for 16 neighbours, finding 83% of the same-person
neighbours (efSearch 16); IVF-Flat (1,264 lists) took 31 s to train and fill and 12 s to search with 98%
found (nprobe 4), 0.25 ms for one query. A person's tracklets sit close together and the k-means lists
follow people, so one or a few lists hold them. faiss' HNSW also cannot remove a vector, and online
linking removes one whenever a tracklet is re-linked or an identity ages out; IVF removes by id.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np

FLAT_MAX = 4096  # knn_graph: up to this many vectors, an exact flat scan (seconds for all pairs)
ONLINE_FLAT_MAX = 1024  # VectorIndex: a flat scan of 8 queries over 1,024 512-d vectors takes about 1 ms
NPROBE = 8  # lists searched per query: same-person neighbours sit in one or two lists
GROWTH = 4  # online: the lists are re-trained when the index has grown this many times since the last time
KMEANS_ITERATIONS = 10
TRAIN_PER_LIST = 40  # k-means training sample: this many vectors per list (faiss warns below 39)


def _faiss():
    # faiss logs, at INFO, each CPU-specific build it tries before the one this machine loads: noise for users.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """faiss' OpenMP threads for the calls inside (this thread only); None leaves them.

    Online calls search a few vectors at a time, where OpenMP costs more than it saves, the more so on
    shared cores: 8 queries over 3,000 vectors took 25 ms with 2 threads and 3.5 ms with 1 (one IVF add:
    1.0 ms against 0.09 ms), measured on our 2 cores with other work running.
    """
    if count is None:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _ivf_index(vectors: np.ndarray, nprobe: int, seed: int = 1234):
    """An empty IVF-Flat inner-product index trained on `vectors` (about 2 sqrt(n) lists), with a by-id map."""
    faiss = _faiss()
    n, dim = vectors.shape
    lists = max(1, min(int(2 * math.sqrt(n)), n // TRAIN_PER_LIST))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = seed
    sample = vectors
    if n > lists * TRAIN_PER_LIST:
        sample = vectors[np.sort(np.random.default_rng(seed).choice(n, lists * TRAIN_PER_LIST, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = nprobe
    return index


def _flat_index(dim: int):
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class VectorIndex:
    """Vectors under int64 ids, searched by inner product; vectors can be added and removed at any time.

    Exact (a flat scan) up to `flat_max` vectors; past that an IVF index, re-trained on the vectors it
    holds whenever it has grown `GROWTH` times since the last training. `searches` counts search calls.
    faiss runs on `threads` OpenMP threads here (one: calls are small, see `_threads`).
    """

    def __init__(self, dim: int, flat_max: int = ONLINE_FLAT_MAX, nprobe: int = NPROBE, threads: int | None = 1
                 ) -> None:
        self.dim, self.flat_max, self.nprobe, self.threads = dim, flat_max, nprobe, threads
        self._index = _flat_index(dim)
        self._ids: set[int] = set()
        self._trained_at = 0  # size at the last training; 0 while flat
        self.searches = 0
        self.trainings = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: int) -> bool:
        return key in self._ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        with _threads(self.threads):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim), ids)
            self._ids.update(ids.tolist())
            if len(self._ids) > self.flat_max and len(self._ids) > GROWTH * self._trained_at:
                self._retrain()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray([i for i in np.asarray(ids, dtype=np.int64).tolist() if i in self._ids], np.int64)
        if len(ids):
            faiss = _faiss()
            with _threads(self.threads):
                self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            self._ids.difference_update(ids.tolist())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids) of the `k` nearest vectors of each query, best first; id -1 pads."""
        self.searches += 1
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if not self._ids:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        with _threads(self.threads):
            return self._index.search(queries, k)

    def _retrain(self) -> None:
        """Move everything into an IVF index trained on the vectors held now (a cost paid log(n) times)."""
        ids = np.fromiter(self._ids, np.int64, len(self._ids))
        vectors = self._index.reconstruct_batch(ids)
        index = _ivf_index(vectors, self.nprobe)
        index.set_direct_map_type(_faiss().DirectMap.Hashtable)  # removal and lookup by id
        index.add_with_ids(vectors, ids)
        self._index, self._trained_at = index, len(ids)
        self.trainings += 1


def knn_graph(vectors: np.ndarray, k: int, flat_max: int = FLAT_MAX, nprobe: int = NPROBE,
              chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's `k` nearest others by inner product: (neighbours (n, k) int64, -1 pads; similarities).

    Exact below `flat_max` vectors, IVF above (`_ivf_index`); queries go `chunk` at a time so the result
    arrays are the only O(n k) memory. The similarities are the index's; callers that need them exact
    recompute them from the vectors.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    if n <= flat_max:
        index = _faiss().IndexFlatIP(vectors.shape[1])
    else:
        index = _ivf_index(vectors, nprobe)
    index.add(vectors)
    neighbours = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for lo in range(0, n, chunk):
        d, i = index.search(vectors[lo:lo + chunk], k + 1)
        own = i == np.arange(lo, lo + len(i))[:, None]
        # Drop each query's own row (or, when it is not among the results, the last neighbour).
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(i)), drop] = False
        neighbours[lo:lo + len(i)] = i[keep].reshape(len(i), k)
        sims[lo:lo + len(i)] = d[keep].reshape(len(i), k)
    return neighbours, sims


__all__ = ["FLAT_MAX", "NPROBE", "ONLINE_FLAT_MAX", "VectorIndex", "knn_graph"]
