"""Online linking: live tracklets join a gallery of identities as they mature and when they end."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tracklink.app.link.constraints import LinkConfig, _centred, can_join
from tracklink.app.records import Identity, Tracklet


class OnlineLinker:
    """A gallery of identities that live tracklets join, once when they mature and again when they end.

    Each call scores the tracklets against every identity and solves one assignment
    (`linear_sum_assignment`), so two tracklets of one step never both join the same identity; a tracklet
    staying in its own identity does not compete for it. A tracklet already linked is scored against its
    identity without itself, so it moves when another identity now fits better, and leaves to a new
    identity when none reaches the threshold. Camera means are recomputed at each call from the gallery
    and the new tracklets, so they follow the scene; early on they are shrunk toward the overall mean
    (see `center_by_camera`). Global ids start at `first_id` and are never reused.
    """

    def __init__(self, config: LinkConfig, first_id: int = 1) -> None:
        self.config = config
        self._identities: dict[int, Identity] = {}
        self._next_id = first_id

    @property
    def identities(self) -> list[Identity]:
        return list(self._identities.values())

    def restore(self, tracklets: Sequence[Tracklet]) -> None:
        """Put stored, already linked tracklets back under their global ids (a viewer reopening a store).

        New ids continue after the largest restored one, so a restored person never shares an id.
        """
        for t in tracklets:
            if t.global_id is None:
                raise ValueError(f"restore got {t.key} without a global id; link it instead")
            self._identities.setdefault(t.global_id, Identity(t.global_id)).members.append(t)
        self._next_id = max([self._next_id, *(g + 1 for g in self._identities)])

    def forget(self, camera: str) -> None:
        """Drop a camera's tracklets (a camera that failed: its results are incomplete and will be redone),
        and the identities left without members."""
        for gid in list(self._identities):
            identity = self._identities[gid]
            identity.members = [m for m in identity.members if m.camera != camera]
            if not identity.members:
                del self._identities[gid]

    def mature(self, tracklet: Tracklet) -> bool:
        return tracklet.num_embeddings >= self.config.min_embeddings

    def link(self, tracklet: Tracklet) -> int:
        return self.link_many([tracklet])[0]

    def link_many(self, tracklets: Sequence[Tracklet]) -> list[int]:
        """Link tracklets that mature or end at the same step; returns their global ids, in order."""
        if len({id(t) for t in tracklets}) != len(tracklets):
            raise ValueError("link_many got the same tracklet twice")
        if not tracklets:
            return []
        cfg = self.config
        gids = list(self._identities)
        known = {id(m) for g in gids for m in self._identities[g].members}
        feature = _centred([m for g in gids for m in self._identities[g].members]
                           + [t for t in tracklets if id(t) not in known], cfg.camera_prior)
        # Identity appearance: members' features weighted by embedding count (see the module docstring).
        totals, weights, cols_j = [], [], []
        for j, g in enumerate(gids):
            featured = [m for m in self._identities[g].members if id(m) in feature]
            if featured:
                totals.append(sum(feature[id(m)] * m.num_embeddings for m in featured))
                weights.append(float(sum(m.num_embeddings for m in featured)))
                cols_j.append(j)
        rows_i = [i for i, t in enumerate(tracklets) if id(t) in feature]
        n, k = len(tracklets), len(gids)
        # Columns: one per identity (joins compete), then one "stay" column per tracklet (no competition).
        benefit = np.zeros((n, k + n))
        valid = np.zeros((n, k + n), dtype=bool)
        if rows_i and cols_j:
            feats = np.stack([feature[id(tracklets[i])] for i in rows_i])
            dots = feats @ np.stack(totals).T
            weight = np.tile(np.array(weights), (len(rows_i), 1))
            column = np.tile(np.array(cols_j), (len(rows_i), 1))
            where = {gids[j]: b for b, j in enumerate(cols_j)}
            for a, i in enumerate(rows_i):
                t, own = tracklets[i], where.get(tracklets[i].global_id)
                if own is None:
                    continue
                # Its own identity: scored without itself, in its private column. Alone there, it has no
                # score (weight 0): keeping the id is then the fallback below, not a match.
                if any(m is t for m in self._identities[t.global_id].members):
                    dots[a, own] -= t.num_embeddings * float(feats[a] @ feats[a])
                    weight[a, own] -= t.num_embeddings
                column[a, own] = k + i
            scores = np.divide(dots, weight, out=np.full(dots.shape, -np.inf), where=weight > 0)
            for a, b in zip(*np.nonzero(scores >= cfg.threshold)):
                t = tracklets[rows_i[a]]
                members = [m for m in self._identities[gids[cols_j[b]]].members if m is not t]
                if can_join(t, members, cfg.transit):
                    benefit[rows_i[a], column[a, b]] = scores[a, b] - cfg.threshold
                    valid[rows_i[a], column[a, b]] = True
        rows, cols = linear_sum_assignment(benefit, maximize=True)
        chosen = {int(r): int(c) for r, c in zip(rows, cols) if valid[r, c]}

        result = []
        for i, t in enumerate(tracklets):
            current = self._identities.get(t.global_id) if t.global_id is not None else None
            c = chosen.get(i)
            if c is not None and c < k:
                target = self._identities[gids[c]]  # joins (or moves to) the identity it fits best
            elif c is not None:
                target = current  # still fits its own identity best
            elif current is not None and not any(id(m) in feature for m in current.members if m is not t):
                target = current  # nothing fits, and it is alone in its identity: keep the id
            else:
                target = Identity(self._next_id)
                self._identities[target.global_id] = target
                self._next_id += 1
            if current is not None and current is not target:
                current.members = [m for m in current.members if m is not t]
                if not current.members:
                    del self._identities[current.global_id]
            if not any(m is t for m in target.members):
                target.members.append(t)
            t.global_id = target.global_id
            result.append(target.global_id)
        return result


__all__ = ["OnlineLinker"]
