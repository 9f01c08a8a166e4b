"""Average linkage on a sparse nearest-neighbour graph: batch clustering in near-linear memory.

Why it makes the exact algorithm's merges: the similarity of two clusters is the weighted average of their
members' pairwise similarities, so two clusters can merge at or above the threshold only if some pair of
their members is at or above it. Clusters therefore never cross the connected components of the graph of
pairs at or above the threshold, and average linkage run on each component alone makes the same merges
as on the whole set (components do not interact: a merge depends only on the two clusters).

The graph holds each tracklet's `k` nearest neighbours (`knn_graph`). It is the full graph of pairs above
the threshold when no tracklet has more than `k` of them and the index finds them; otherwise a pair is
missing, which changes a result only when it was the one link between two parts of a component.

A component of up to `exact_max` tracklets runs the exact algorithm (`average_linkage`) on its own dense
matrix; a larger one (a crowd of look-alikes, a very low threshold) merges best-first over its graph
edges with a heap, scoring a pair of clusters exactly from their weighted feature sums:
average similarity = sum_A . sum_B / (W_A W_B). Then the clusters' mean features are searched the same
way (`_join_fragments`), which finds the pairs of one person's fragments that the tracklet graph missed.
"""

from __future__ import annotations

import heapq
from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from tracklink.app.link.constraints import cannot_link_matrix
from tracklink.app.link.index import knn_graph
from tracklink.models.linkage import average_linkage

K_NEIGHBOURS = 20  # a person seen 21 times or more still links through chains of nearer neighbours
EXACT_MAX = 4000  # the dense algorithm's size limit: about 2 s and 0.5 GB at 4,000 (issue 10)
SLACK = 1e-4  # keep pairs this far below the threshold too: float32 search against float64 scores
FRAGMENT_PASSES = 3  # `_join_fragments` rounds at most; on the benchmark the second one finds nothing

MergeCheck = Callable[[list[int]], bool]


def graph_average_linkage(features: np.ndarray, weights: np.ndarray, cams: np.ndarray, start: np.ndarray,
                          end: np.ndarray, merge_ok: MergeCheck | None, stop_below: float,
                          k: int | None = None, exact_max: int | None = None) -> list[list[int]]:
    """Clusters (lists of row indices) of constrained average linkage, as `average_linkage` makes them.

    `cams` (integer codes), `start` and `end` give the one-camera-overlap cannot-link rule; `merge_ok`
    checks the merged members (transit windows) as in `average_linkage`. `k` and `exact_max` default to
    `K_NEIGHBOURS` and `EXACT_MAX`. After the clustering per component, `_join_fragments` gives pairs the
    index missed a second chance.
    """
    k = K_NEIGHBOURS if k is None else k
    exact_max = EXACT_MAX if exact_max is None else exact_max
    if len(features) == 0:
        return []
    groups = _by_components(features, weights, cams, start, end, merge_ok, stop_below, k, exact_max)
    for _ in range(FRAGMENT_PASSES):
        joined = _join_fragments(groups, features, weights, cams, start, end, merge_ok, stop_below, k)
        if len(joined) == len(groups):
            break
        groups = joined
    return groups


def _edges(vectors: np.ndarray, k: int, stop_below: float) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (rows, cols) from each vector to those of its `k` nearest at or above `stop_below`."""
    neighbours, sims = knn_graph(vectors, k)
    rows = np.repeat(np.arange(len(vectors)), neighbours.shape[1])
    cols, sims = neighbours.ravel(), sims.ravel()
    keep = (cols >= 0) & (sims >= stop_below - SLACK)
    return rows[keep], cols[keep]


def _by_components(features: np.ndarray, weights: np.ndarray, cams: np.ndarray, start: np.ndarray, end: np.ndarray,
                   merge_ok: MergeCheck | None, stop_below: float, k: int, exact_max: int) -> list[list[int]]:
    """Average linkage on each connected component of the graph of neighbours above the threshold."""
    n = len(features)
    rows, cols = _edges(features, k, stop_below)
    _, label = connected_components(coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n)),
                                    directed=False)
    order = np.argsort(label, kind="stable")  # each component's rows in ascending order
    groups: list[list[int]] = []
    for comp in np.split(order, np.flatnonzero(np.diff(label[order])) + 1):
        if len(comp) == 1:
            groups.append([int(comp[0])])
            continue
        local_ok = None if merge_ok is None else (lambda items, comp=comp: merge_ok([int(comp[i]) for i in items]))
        if len(comp) <= exact_max:
            cannot = cannot_link_matrix(cams[comp], start[comp], end[comp])
            found, _ = average_linkage(features[comp], weights[comp], cannot, local_ok, stop_below)
        else:
            inside = label[rows] == label[comp[0]]
            local = np.full(n, -1, np.int64)
            local[comp] = np.arange(len(comp))
            sums = features[comp].astype(np.float64) * weights[comp, None]
            found = heap_average_linkage(sums, weights[comp].astype(np.float64), [[i] for i in range(len(comp))],
                                         local[rows[inside]], local[cols[inside]], cams[comp], start[comp], end[comp],
                                         local_ok, stop_below)
        groups += [[int(comp[i]) for i in g] for g in found]
    return groups


def _join_fragments(groups: list[list[int]], features: np.ndarray, weights: np.ndarray, cams: np.ndarray,
                    start: np.ndarray, end: np.ndarray, merge_ok: MergeCheck | None, stop_below: float,
                    k: int) -> list[list[int]]:
    """Merge clusters whose average similarity reaches the threshold, found by searching cluster means.

    A cluster's weighted mean feature dotted with another's is exactly their average-linkage similarity,
    and a mean over several tracklets is less noisy than any one of them, so the index finds pairs of
    fragments of one person that it missed between their tracklets. On 100,000 synthetic tracklets the
    tracklet graph (IVF, nprobe 8) held 79% of the same-person neighbours and left 579 of 12,500 people
    split; this pass joins them. Where the exact algorithm has run, no allowed pair is left at or above the
    threshold, so this pass changes nothing there.
    """
    n, g = len(features), len(groups)
    label = np.empty(n, np.int64)
    for i, members in enumerate(groups):
        label[members] = i
    assign = csr_matrix((np.asarray(weights, np.float64), (label, np.arange(n))), shape=(g, n))
    sums = np.asarray(assign @ features, dtype=np.float64)
    size = np.asarray(assign.sum(axis=1)).ravel()
    rows, cols = _edges((sums / size[:, None]).astype(np.float32), k, stop_below)
    involved = np.unique(np.concatenate([rows, cols]))
    if len(involved) == 0:
        return groups
    local = np.full(g, -1, np.int64)
    local[involved] = np.arange(len(involved))
    merged = heap_average_linkage(sums[involved], size[involved], [list(groups[i]) for i in involved],
                                  local[rows], local[cols], cams, start, end, merge_ok, stop_below)
    untouched = np.ones(g, bool)
    untouched[involved] = False
    return [groups[i] for i in np.flatnonzero(untouched)] + merged


def heap_average_linkage(sums: np.ndarray, size: np.ndarray, members: list[list[int]], edge_a: np.ndarray,
                         edge_b: np.ndarray, cams: np.ndarray, start: np.ndarray, end: np.ndarray,
                         merge_ok: MergeCheck | None, stop_below: float) -> list[list[int]]:
    """Best-first constrained average linkage of clusters over the given edges, in memory linear in both.

    Cluster i has weighted feature sum `sums[i]`, total weight `size[i]` and `members[i]` (row indices
    into `cams`, `start`, `end`). Only clusters joined by an edge are compared, each pair scored exactly
    from the sums; a pair refused by a constraint is dropped until one side changes, as in
    `average_linkage`. Ties go to the lower indices, and the lower index survives a merge.
    """
    m = len(sums)
    sums, size, members = np.array(sums, np.float64), np.array(size, np.float64), [list(g) for g in members]
    adjacency: list[set[int]] = [set() for _ in range(m)]
    for a, b in zip(edge_a.tolist(), edge_b.tolist()):
        if a != b:
            adjacency[a].add(b)
            adjacency[b].add(a)
    version = [0] * m
    heap: list[tuple[float, int, int, int, int]] = []

    def push_pairs(x: int, others: list[int]) -> None:
        if not others:
            return
        scores = sums[others] @ sums[x] / (size[others] * size[x])
        for y, s in zip(others, scores.tolist()):
            if s >= stop_below:
                a, b = min(x, y), max(x, y)
                heapq.heappush(heap, (-s, a, b, version[a], version[b]))

    def overlap(xs: list[int], ys: list[int]) -> bool:
        return bool(cannot_link_matrix(np.concatenate([cams[xs], cams[ys]]), np.concatenate([start[xs], start[ys]]),
                                       np.concatenate([end[xs], end[ys]]))[:len(xs), len(xs):].any())

    for x in range(m):
        push_pairs(x, [y for y in adjacency[x] if y > x])
    while heap:
        negative, a, b, va, vb = heapq.heappop(heap)
        if -negative < stop_below:
            break
        if version[a] != va or version[b] != vb:
            continue  # one side has changed since this pair was scored
        if overlap(members[a], members[b]) or (merge_ok is not None and not merge_ok(members[a] + members[b])):
            continue
        sums[a] += sums[b]
        size[a] += size[b]
        members[a], members[b] = members[a] + members[b], []
        version[a], version[b] = version[a] + 1, -1
        for z in adjacency[b]:
            adjacency[z].discard(b)
            if z != a:
                adjacency[z].add(a)
                adjacency[a].add(z)
        adjacency[a].discard(b)
        adjacency[b] = set()
        push_pairs(a, sorted(adjacency[a]))
    return [g for g in members if g]


__all__ = ["EXACT_MAX", "K_NEIGHBOURS", "graph_average_linkage", "heap_average_linkage"]
