"""OSM+CAA and baseline losses against numbers worked out from the formulas in plain Python."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tracklink import TracklinkError
from tracklink.train.losses import (
    LossConfig,
    batch_hard_triplet,
    build_criterion,
    caa_weighted_ce,
    osm_caa_loss,
    tracklet_features,
)

CAA_SIGMA = 0.68


def _caa(p: float) -> float:
    return math.exp(-((p - 1) ** 2) / (2 * CAA_SIGMA**2))


def _logits_for(p_true: list[float], labels: list[int]) -> torch.Tensor:
    """Two-class logits whose softmax gives exactly p_true for the labelled class."""
    rows = [[math.log(p), math.log(1 - p)] if y == 0 else [math.log(1 - p), math.log(p)]
            for p, y in zip(p_true, labels)]
    return torch.tensor(rows, dtype=torch.float64)


# Four 2-D points on circles of different radii (normalisation must remove the radius) at angles whose
# chord lengths are known: 2 sin(delta / 2).
ANGLES = [0.0, 60.0, 180.0, 270.0]
RADII = [2.0, 0.5, 3.0, 1.0]
LABELS = [0, 0, 1, 1]
P_TRUE = [0.9, 0.5, 0.8, 0.2]


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    emb = torch.tensor([[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
                        for a, r in zip(ANGLES, RADII)], dtype=torch.float64)
    return emb, torch.tensor(LABELS), _logits_for(P_TRUE, LABELS)


def _hand_terms(alpha: float, sigma: float) -> tuple[float, float]:
    """L_P and L_N of the hand case, written out pair by pair."""
    a = [_caa(p) for p in P_TRUE]
    # positives: (0,1) at 60 degrees -> d^2 = 1; (2,3) at 90 degrees -> d^2 = 2
    w01 = math.exp(-1 / sigma**2) * min(a[0], a[1])
    w23 = math.exp(-2 / sigma**2) * min(a[2], a[3])
    l_pos = 0.5 * (w01 * 1 + w23 * 2) / (w01 + w23)
    # negatives: (0,2) d=2, (0,3) d=sqrt2, (1,2) d=sqrt3, (1,3) d=2 sin 75deg
    num = den = 0.0
    for (i, j), d in {(0, 2): 2.0, (0, 3): math.sqrt(2), (1, 2): math.sqrt(3),
                      (1, 3): 2 * math.sin(math.radians(75))}.items():
        hinge = max(0.0, alpha - d)
        w = hinge * min(a[i], a[j])
        num, den = num + w * hinge**2, den + w
    l_neg = 0.5 * num / den if den else 0.0
    return l_pos, l_neg


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 0.3])
def test_osm_caa_matches_hand_computation(lam: float) -> None:
    emb, labels, logits = _hand_case()
    l_pos, l_neg = _hand_terms(alpha=1.8, sigma=0.8)  # (0,3) and (1,2) are inside the margin
    assert l_neg > 0
    got = osm_caa_loss(emb, labels, logits, alpha=1.8, sigma=0.8, lam=lam)
    assert got.item() == pytest.approx((1 - lam) * l_pos + lam * l_neg, rel=1e-9)


def test_osm_caa_float32_and_defaults() -> None:
    emb, labels, logits = _hand_case()
    l_pos, l_neg = _hand_terms(alpha=1.2, sigma=0.8)
    assert l_neg == 0.0  # every negative is at least sqrt(2) > 1.2 apart
    got = osm_caa_loss(emb.float(), labels, logits.float())
    assert got.item() == pytest.approx(0.5 * l_pos, rel=1e-5)


def _reference(emb: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None, *, alpha: float,
               sigma: float, lam: float, official: bool = False, use_osm: bool = True, use_caa: bool = True,
               detach_weights: bool = True) -> torch.Tensor:
    """Pair-by-pair loop over i < j, the spec read literally; detach_weights=False is the wrong version."""
    f = emb / emb.norm(dim=1, keepdim=True)
    src = f.detach() if detach_weights else f
    att = None
    if use_caa and logits is not None:
        att = [_caa(logits[i].softmax(0)[labels[i]].item()) for i in range(len(labels))]
    num = {True: 0, False: 0}
    den = {True: 0.0, False: 0.0}
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d = (f[i] - f[j]).norm()
            d_w = (src[i] - src[j]).norm()
            positive = bool(labels[i] == labels[j])
            if use_osm:
                width = 2 * sigma**2 if official else sigma**2
                s = torch.exp(-d_w**2 / width) if positive else torch.clamp(alpha - d_w, min=0)
            else:
                s = torch.ones((), dtype=emb.dtype)
            w = s * (min(att[i], att[j]) if att else 1.0)
            num[positive] = num[positive] + w * (d**2 if positive else torch.clamp(alpha - d, min=0) ** 2)
            den[positive] += float(w.detach()) if torch.is_tensor(w) else w
    l_pos = 0.5 * num[True] / (den[True] + 1e-12)
    l_neg = 0.5 * num[False] / (den[False] + 1e-12)
    return (1 - lam) * l_pos + lam * l_neg


def _random_batch(seed: int = 0, n: int = 8, dim: int = 4, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % classes
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64) * 2
    return emb, labels, logits


@pytest.mark.parametrize("use_osm", [True, False])
@pytest.mark.parametrize("use_caa", [True, False])
@pytest.mark.parametrize("official", [True, False])
def test_osm_caa_matches_pair_loop(use_osm: bool, use_caa: bool, official: bool) -> None:
    emb, labels, logits = _random_batch()
    kw = dict(alpha=1.2, sigma=0.6, lam=0.4)
    got = osm_caa_loss(emb, labels, logits, sigma_form="official" if official else "paper", use_osm=use_osm,
                       use_caa=use_caa, **kw)
    want = _reference(emb, labels, logits, official=official, use_osm=use_osm, use_caa=use_caa, **kw)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)


def test_plain_contrastive_is_half_mean_squares() -> None:
    emb, labels, _ = _random_batch(seed=1)
    f = F.normalize(emb, dim=1)
    d = torch.cdist(f, f)
    i, j = torch.triu_indices(len(labels), len(labels), offset=1)
    pos = labels[i] == labels[j]
    want_pos = 0.5 * (d[i, j][pos] ** 2).mean()
    want_neg = 0.5 * ((1.2 - d[i, j][~pos]).clamp(min=0) ** 2).mean()
    got = osm_caa_loss(emb, labels, None, use_osm=False, lam=0.25)
    assert got.item() == pytest.approx((0.75 * want_pos + 0.25 * want_neg).item(), rel=1e-9)


def test_gradcheck_wrt_embeddings() -> None:
    # Finite differences also move the OSM weights, which the loss holds constant by design; with s = 1
    # the weights (CAA from fixed logits) do not depend on the embeddings, so the check is exact. The OSM
    # path's gradient is checked against detached weights in the next test.
    emb, labels, logits = _random_batch(seed=2, n=6)
    emb.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda e: osm_caa_loss(e, labels, logits, alpha=1.2, sigma=0.8, use_osm=False), (emb,))
    assert torch.autograd.gradcheck(lambda e: osm_caa_loss(e, labels, None, alpha=1.6, use_osm=False), (emb,))


def test_no_gradient_through_weights() -> None:
    emb, labels, logits = _random_batch(seed=3)
    emb.requires_grad_(True)
    logits.requires_grad_(True)
    kw = dict(alpha=1.2, sigma=0.6, lam=0.5)
    loss = osm_caa_loss(emb, labels, logits, **kw)
    grad_emb, grad_logits = torch.autograd.grad(loss, (emb, logits), allow_unused=True)
    assert grad_logits is None or torch.all(grad_logits == 0)

    (want,) = torch.autograd.grad(_reference(emb, labels, logits, **kw), emb)
    torch.testing.assert_close(grad_emb, want)
    # The comparison can tell: letting the gradient through the OSM weights changes it.
    (wrong,) = torch.autograd.grad(_reference(emb, labels, logits, detach_weights=False, **kw), emb)
    assert not torch.allclose(wrong, want, atol=1e-6)


def _finite_grad(loss: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, emb)
    assert torch.isfinite(grad).all()
    return grad


def test_batch_without_positives() -> None:
    emb, labels, logits = _random_batch(seed=4, n=3)  # labels 0, 1, 2
    emb.requires_grad_(True)
    assert osm_caa_loss(emb, labels, logits, lam=0.0).item() == 0.0  # L_P alone
    only_neg = osm_caa_loss(emb, labels, logits, lam=1.0)
    assert only_neg.item() > 0
    half = osm_caa_loss(emb, labels, logits, lam=0.5)
    assert half.item() == pytest.approx(0.5 * only_neg.item(), rel=1e-12)
    _finite_grad(half, emb)


def test_batch_without_negatives() -> None:
    emb, _, logits = _random_batch(seed=5, n=5)
    emb.requires_grad_(True)
    labels = torch.zeros(5, dtype=torch.long)
    assert osm_caa_loss(emb, labels, logits, lam=1.0).item() == 0.0  # L_N alone
    only_pos = osm_caa_loss(emb, labels, logits, lam=0.0)
    half = osm_caa_loss(emb, labels, logits, lam=0.5)
    assert half.item() == pytest.approx(0.5 * only_pos.item(), rel=1e-12)
    _finite_grad(half, emb)


def test_single_sample_and_all_zero_weights() -> None:
    one = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    assert osm_caa_loss(one, torch.tensor([3])).item() == 0.0
    # Classes at opposite poles: negatives are beyond a tiny alpha, and a tiny sigma underflows every
    # positive weight to exactly 0.
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0], [-0.8, -0.6]], dtype=torch.float64,
                       requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = osm_caa_loss(emb, labels, alpha=0.1, sigma=1e-3)
    assert loss.item() == 0.0
    assert torch.all(_finite_grad(loss, emb) == 0)


def test_coincident_embeddings_give_finite_gradient() -> None:
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])  # (0,1) positives at d=0, (0,2) negatives at d=0
    loss = osm_caa_loss(emb, labels, torch.randn(4, 2))
    assert torch.isfinite(loss)
    _finite_grad(loss, emb)


def test_sigma_form_switch() -> None:
    emb, labels, logits = _random_batch(seed=6)
    official = osm_caa_loss(emb, labels, logits, sigma=0.8, sigma_form="official")
    paper = osm_caa_loss(emb, labels, logits, sigma=0.8, sigma_form="paper")
    paper_wide = osm_caa_loss(emb, labels, logits, sigma=0.8 * math.sqrt(2), sigma_form="paper")
    assert official.item() == pytest.approx(paper_wide.item(), rel=1e-12)
    assert abs(official.item() - paper.item()) > 1e-4
    with pytest.raises(ValueError, match="sigma_form"):
        osm_caa_loss(emb, labels, sigma_form="gaussian")


def test_batch_hard_triplet_by_hand() -> None:
    feat = torch.tensor([[0.0], [2.0], [1.0], [5.0]], requires_grad=True)
    # anchor 0: hardest pos 2, hardest neg 1 -> 1.3; anchor 1: 2, 1 -> 1.3; anchor 2: 4, 1 -> 3.3;
    # anchor 3: 4, 3 -> 1.3. Mean 1.8.
    loss = batch_hard_triplet(feat, torch.tensor([0, 0, 1, 1]), margin=0.3)
    assert loss.item() == pytest.approx(1.8, rel=1e-6)
    _finite_grad(loss, feat)
    # Anchor 2 has no positive: skipped, the others give 1.3 each.
    assert batch_hard_triplet(feat[:3], torch.tensor([0, 0, 1])).item() == pytest.approx(1.3, rel=1e-6)
    # Only the hardest pairs count: anchors 0.5 -> 0.5 and 1.0 -> 8.0 + 0.5 + 1 make (0.5 + 1 + 8.5 + 0.5) / 4.
    feat2 = torch.tensor([[0.0], [0.5], [1.0], [9.0]])
    assert batch_hard_triplet(feat2, torch.tensor([0, 0, 1, 1]), margin=1.0).item() == pytest.approx(2.625)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [1, 1, 1, 1]])
def test_batch_hard_triplet_without_valid_anchor(labels: list[int]) -> None:
    feat = torch.randn(4, 8, requires_grad=True)
    loss = batch_hard_triplet(feat, torch.tensor(labels))
    assert loss.item() == 0.0
    _finite_grad(loss, feat)


def test_caa_weighted_ce_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.5]], dtype=torch.float64,
                          requires_grad=True)
    labels = [0, 2, 0]
    ce, w = [], []
    for row, y in zip(logits.tolist(), labels):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        ce.append(-math.log(p))
        w.append(math.exp(-((p - 0.5) ** 2) / (2 * 0.18**2)))
    want = sum(wi * ci for wi, ci in zip(w, ce)) / sum(w)
    got = caa_weighted_ce(logits, torch.tensor(labels))
    assert got.item() == pytest.approx(want, rel=1e-9)
    assert abs(want - sum(ce) / 3) > 1e-3  # the weighting matters here

    # The weights are constants: the gradient is that of sum_i w_i CE_i with w fixed.
    (grad,) = torch.autograd.grad(got, logits)
    fixed = torch.tensor(w, dtype=torch.float64) / sum(w)
    (want_grad,) = torch.autograd.grad(
        (fixed * F.cross_entropy(logits, torch.tensor(labels), reduction="none")).sum(), logits)
    torch.testing.assert_close(grad, want_grad)


def test_caa_weighted_ce_equals_ce_when_weights_are_equal() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    labels = torch.tensor([0, 1, 1])  # p = sigmoid(1), sigmoid(1), 0.5: rows 0 and 1 share a weight
    same = torch.tensor([0, 1])
    assert caa_weighted_ce(logits[:2], same).item() == pytest.approx(F.cross_entropy(logits[:2], same).item())
    assert caa_weighted_ce(logits, labels).item() != pytest.approx(F.cross_entropy(logits, labels).item())


# -- tracklet level and the criterion ------------------------------------------------------------------

def _clip_batch(seed: int = 7, b: int = 4, t: int = 3, d: int = 5, c: int = 3):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    logits = torch.randn(b, t, c, generator=g, dtype=torch.float64) * 2
    labels = torch.tensor([0, 0, 1, 2])[:b]
    return frames, logits, labels


def _hand_tracklet_features(frames: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = []
    for clip, clip_logits, y in zip(frames.tolist(), logits.tolist(), labels.tolist()):
        att = []
        for row in clip_logits:
            p = math.exp(row[y]) / sum(math.exp(v) for v in row)
            att.append(_caa(p))
        total = sum(att)
        feat = [0.0] * len(clip[0])
        for f, a in zip(clip, att):
            norm = math.sqrt(sum(v * v for v in f))
            feat = [acc + a / total * v / norm for acc, v in zip(feat, f)]
        out.append(feat)
    return torch.tensor(out, dtype=torch.float64)


def test_tracklet_features_use_true_class_attention() -> None:
    frames, logits, labels = _clip_batch()
    want = _hand_tracklet_features(frames, logits, labels)
    torch.testing.assert_close(tracklet_features(frames, logits, labels), want)
    mean = F.normalize(frames, dim=-1).mean(dim=1)
    torch.testing.assert_close(tracklet_features(frames, logits, labels, use_caa=False), mean)
    assert not torch.allclose(want, mean, atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        tracklet_features(frames, logits)


def test_criterion_sums_frame_tracklet_and_classification_terms() -> None:
    frames, logits, labels = _clip_batch()
    b, t, _ = frames.shape
    feat = frames.reshape(b * t, -1).requires_grad_(True)
    frame_logits = logits.reshape(b * t, -1)
    frame_labels = labels.repeat_interleave(t)
    criterion = build_criterion("osm_caa", cls="ce", tracklet_weight=0.5)

    total, parts = criterion(feat, feat * 3, frame_logits, labels, clip_len=t)  # one label per tracklet
    want_frame = osm_caa_loss(feat, frame_labels, frame_logits)
    want_tracklet = osm_caa_loss(_hand_tracklet_features(frames, logits, labels), labels)
    want_cls = F.cross_entropy(frame_logits, frame_labels)
    assert parts["metric"] == pytest.approx(want_frame.item(), rel=1e-6)
    assert parts["tracklet"] == pytest.approx(want_tracklet.item(), rel=1e-6)
    assert parts["cls"] == pytest.approx(want_cls.item(), rel=1e-6)
    want_total = want_frame + 0.5 * want_tracklet + want_cls
    assert total.item() == pytest.approx(want_total.item(), rel=1e-6)
    assert parts["total"] == pytest.approx(total.item())
    _finite_grad(total, feat)

    # Per-frame labels give the same result; tracklet=False drops the tracklet term.
    _, frame_parts = criterion(feat, feat, frame_logits, frame_labels, clip_len=t)
    assert frame_parts == pytest.approx(parts)
    _, no_tracklet = build_criterion(tracklet=False)(feat, feat, frame_logits, labels, clip_len=t)
    assert no_tracklet["tracklet"] == 0.0
    assert no_tracklet["total"] == pytest.approx(want_frame.item() + want_cls.item(), rel=1e-6)

    # Image batches have no tracklet term.
    _, image_parts = criterion(feat, feat, frame_logits, frame_labels)
    assert image_parts["tracklet"] == 0.0
    assert image_parts["metric"] == pytest.approx(want_frame.item(), rel=1e-6)


@pytest.mark.parametrize("metric", ["osm", "contrastive", "triplet"])
@pytest.mark.parametrize("cls", ["caa_ce", "none"])
def test_criterion_variants(metric: str, cls: str) -> None:
    frames, logits, labels = _clip_batch(seed=8)
    b, t, _ = frames.shape
    feat = frames.reshape(b * t, -1).float().requires_grad_(True)
    frame_logits, frame_labels = logits.reshape(b * t, -1).float(), labels.repeat_interleave(t)
    total, parts = build_criterion(metric, cls=cls)(feat, feat, frame_logits, labels, clip_len=t)
    pooled = F.normalize(frames.float(), dim=-1).mean(dim=1)  # no CAA outside "osm_caa": the test-time mean
    want_tracklet = (batch_hard_triplet(pooled, labels) if metric == "triplet" else
                     osm_caa_loss(pooled, labels, use_osm=metric == "osm", use_caa=False))
    assert parts["tracklet"] == pytest.approx(want_tracklet.item(), rel=1e-5)
    want_cls = caa_weighted_ce(frame_logits, frame_labels).item() if cls == "caa_ce" else 0.0
    assert parts["cls"] == pytest.approx(want_cls, rel=1e-5)
    _finite_grad(total, feat)


def test_criterion_uses_embedding_when_asked() -> None:
    frames, logits, labels = _clip_batch()
    feat = frames.reshape(12, -1)
    emb = torch.randn_like(feat)
    frame_labels = labels.repeat_interleave(3)
    _, parts = build_criterion(metric_on="embedding", cls="none")(feat, emb, None, frame_labels)
    assert parts["metric"] == pytest.approx(osm_caa_loss(emb, frame_labels).item(), rel=1e-9)


def test_criterion_rejects_bad_input() -> None:
    frames, logits, labels = _clip_batch()
    feat, frame_logits = frames.reshape(12, -1), logits.reshape(12, -1)
    frame_labels = labels.repeat_interleave(3)
    criterion = build_criterion()
    with pytest.raises(ValueError, match="inside a tracklet"):
        criterion(feat, feat, frame_logits, labels.repeat(3), clip_len=3)  # rows interleaved, not grouped
    with pytest.raises(ValueError, match="clip_len"):
        criterion(feat, feat, frame_logits, frame_labels, clip_len=5)
    with pytest.raises(ValueError, match="4 tracklet labels or 12 frame labels"):
        criterion(feat, feat, frame_logits, frame_labels[:6], clip_len=3)
    with pytest.raises(TracklinkError, match="num_classes"):
        criterion(feat, feat, None, frame_labels, clip_len=3)
    with pytest.raises(TracklinkError, match="metric"):
        build_criterion("arcface")
    with pytest.raises(TracklinkError, match="unknown loss option"):
        build_criterion(sgima=0.8)
    with pytest.raises(TracklinkError, match="sigma"):
        LossConfig(sigma=0.0)


def test_label_smoothing_reaches_both_classification_losses() -> None:
    frames, logits, labels = _clip_batch(seed=9)
    b, t, _ = frames.shape
    feat = frames.reshape(b * t, -1).float()
    frame_logits, frame_labels = logits.reshape(b * t, -1).float(), labels.repeat_interleave(t)
    _, parts = build_criterion("osm", cls="ce", label_smoothing=0.1)(feat, feat, frame_logits, labels, clip_len=t)
    want = F.cross_entropy(frame_logits, frame_labels, label_smoothing=0.1).item()
    assert parts["cls"] == pytest.approx(want, rel=1e-6)
    assert want != pytest.approx(F.cross_entropy(frame_logits, frame_labels).item(), rel=1e-3)
    _, caa = build_criterion("osm", cls="caa_ce", label_smoothing=0.1)(feat, feat, frame_logits, labels, clip_len=t)
    assert caa["cls"] == pytest.approx(caa_weighted_ce(frame_logits, frame_labels, label_smoothing=0.1).item(),
                                       rel=1e-6)


def test_metric_none_leaves_the_classification_loss_only() -> None:
    frames, logits, labels = _clip_batch(seed=10)
    b, t, _ = frames.shape
    feat = frames.reshape(b * t, -1).float()
    total, parts = build_criterion("none", cls="ce")(feat, feat, logits.reshape(b * t, -1).float(), labels, clip_len=t)
    assert parts["metric"] == parts["tracklet"] == 0.0 and total.item() == pytest.approx(parts["cls"])
    with pytest.raises(TracklinkError, match="nothing to train"):
        build_criterion("none", cls="none")
