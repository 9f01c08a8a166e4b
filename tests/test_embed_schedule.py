"""Which tracked crops the pipeline embeds: a track's first `warmup` fit crops, then one every `every` frames."""

from __future__ import annotations

import numpy as np
import pytest

from tracklink import TracklinkError
from tracklink.app.pipeline import EmbedSchedule, TrackletPool
from tracklink.app.records import Track


def run_pool(schedule: EmbedSchedule, frames: int, unfit: set[int] = frozenset()) -> tuple[list[int], TrackletPool]:
    """Drive one camera's pool as the pipeline does; returns the frames whose crop was embedded."""
    pool, embedded = TrackletPool("cam"), []
    for f in range(1, frames + 1):
        wanted = f not in unfit and pool.due(7, schedule)
        emb = np.full(4, 0.5, np.float32) if wanted else None
        pool.update([Track("cam", f, f / 10, 7, np.zeros(4, np.float32), 0.9, emb)])
        pool.frames += 1
        if wanted:
            embedded.append(f)
    return embedded, pool


def test_warmup_then_every_nth_frame():
    embedded, pool = run_pool(EmbedSchedule(warmup=2, every=3), 12)
    assert embedded == [1, 2, 5, 8, 11]
    assert pool.live[7].num_embeddings == 5 and pool.live[7].num_boxes == 12


def test_an_unfit_crop_defers_the_embedding_to_the_next_fit_one():
    embedded, _ = run_pool(EmbedSchedule(warmup=2, every=3), 12, unfit={2, 5})
    assert embedded == [1, 3, 6, 9, 12]


def test_every_one_embeds_every_fit_crop_and_an_ended_track_is_forgotten():
    embedded, pool = run_pool(EmbedSchedule(warmup=0, every=1), 6, unfit={4})
    assert embedded == [1, 2, 3, 5, 6]
    pool.end([7])
    assert pool.due(7, EmbedSchedule()) and not pool.live


@pytest.mark.parametrize("kwargs", [{"every": 0}, {"warmup": -1}])
def test_bad_schedule_is_refused(kwargs):
    with pytest.raises(TracklinkError, match="embed schedule"):
        EmbedSchedule(**kwargs)
