"""Online clusterer on embeddings drawn around known centroids (seeded)."""

import numpy as np
import pytest

from stream_spk.clustering import ClusterConfig, OnlineClusterer, average_linkage_groups


def _centroids(k: int, dim: int = 192, seed: int = 0) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((k, dim))
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def _draw(centroid: np.ndarray, rng, spread: float = 1.0) -> np.ndarray:
    # noise of norm ~spread: cosine ~0.7 to the centre and ~0.5 between two windows of a speaker,
    # about what ECAPA gives for 1.5 s windows of one voice
    e = centroid + spread * rng.standard_normal(centroid.size) / np.sqrt(centroid.size)
    return (e / np.linalg.norm(e)).astype(np.float32)


def _sequence(order, per_turn=6, seed=1, k=4):
    cents = _centroids(k)
    rng = np.random.default_rng(seed)
    return cents, [(spk, _draw(cents[spk], rng)) for spk in order for _ in range(per_turn)]


def test_recovers_known_speakers():
    cents, seq = _sequence([0, 1, 2, 0, 3, 1, 2, 3, 0])
    c = OnlineClusterer()
    mapping: dict[int, set] = {}
    for i, (spk, e) in enumerate(seq):
        a = c.observe(e, 1.5, 0.5 * (i + 3))
        mapping.setdefault(spk, set()).add(c.resolve(a.label))
    confirmed = [cl for cl in c.clusters if cl.confirmed]
    assert len(confirmed) == 4
    # each true speaker ends up under one label (candidates resolve to their final cluster)
    finals = {spk: {c.resolve(lbl) for lbl in labels} for spk, labels in mapping.items()}
    assert all(len(v) == 1 for v in finals.values()), finals
    assert len({next(iter(v)) for v in finals.values()}) == 4
    for cl in confirmed:
        assert max(float(cl.centroid @ cents[k]) for k in range(4)) > 0.9


def test_one_noisy_window_never_creates_a_speaker():
    cents, seq = _sequence([0, 1], per_turn=8)
    c = OnlineClusterer(ClusterConfig(candidate_timeout=3.0))
    t = 1.5
    for _, e in seq[:8]:
        c.observe(e, 1.5, t)
        t += 0.5
    outlier = _centroids(1, seed=99)[0]
    c.observe(outlier, 1.5, t)
    for _, e in seq[:8]:  # speaker 0 again, long enough for the outlier candidate to expire
        t += 0.5
        c.observe(e, 1.5, t)
    assert sum(cl.confirmed for cl in c.clusters) == 1
    assert len(c.clusters) == 1  # the one-window candidate is gone


def test_clusters_that_become_close_are_merged_with_a_relabel():
    rng = np.random.default_rng(5)
    u, noise = _centroids(2, seed=7)
    v = noise - (noise @ u) * u + 0.15 * u  # cosine(u, v) ~0.15: looks like a second voice at first
    v /= np.linalg.norm(v)
    w = (u + v) / np.linalg.norm(u + v)  # later windows sit between the two (cosine ~0.76 to each)
    c = OnlineClusterer()
    events, t = [], 1.5
    for centre in [u] * 8 + [v] * 8:
        events += c.observe(_draw(centre, rng, spread=0.2), 1.5, t, speech=0.5).events
        t += 0.5
    assert sum(cl.confirmed for cl in c.clusters) == 2 and not events
    for _ in range(30):
        events += c.observe(_draw(w, rng, spread=0.2), 1.5, t, speech=0.5).events
        t += 0.5
    merges = [ev for ev in events if ev.reason == "merge"]
    assert merges and (merges[0].old, merges[0].new) == ("speaker 2", "speaker 1")
    assert sum(cl.confirmed for cl in c.clusters) == 1 and c.resolve("speaker 2") == "speaker 1"


def test_enrolled_profiles_are_matched_first():
    from dataclasses import dataclass

    @dataclass
    class Profile:
        name: str
        centroid: np.ndarray

    cents = _centroids(3)
    rng = np.random.default_rng(2)
    c = OnlineClusterer(profiles=[Profile("Anna", cents[0])])
    labels = [c.observe(_draw(cents[0], rng), 1.5, 0.5 * i + 2).label for i in range(6)]
    assert set(labels) == {"Anna"}
    others = [c.resolve(c.observe(_draw(cents[1], rng), 1.5, 0.5 * i + 6).label) for i in range(8)]
    assert "Anna" not in others and others[-1] == "speaker 1"
    anna = c.get("Anna")
    assert anna is not None and np.allclose(anna.centroid, cents[0])  # never drifts by default


def test_max_speakers_caps_anonymous_clusters():
    cents, seq = _sequence([0, 1, 2, 3], per_turn=8)
    c = OnlineClusterer(ClusterConfig(max_speakers=2))
    for i, (_, e) in enumerate(seq):
        c.observe(e, 1.5, 0.5 * i + 1.5)
    assert sum(1 for cl in c.clusters if cl.name is None) <= 2


def test_user_merge_and_rename():
    cents, seq = _sequence([0, 1], per_turn=8)
    c = OnlineClusterer()
    for i, (_, e) in enumerate(seq):
        c.observe(e, 1.5, 0.5 * i + 1.5)
    ev = c.merge("speaker 1", "speaker 2", 10.0)
    assert (ev.old, ev.new) == ("speaker 2", "speaker 1") and c.resolve("speaker 2") == "speaker 1"
    ev = c.rename("speaker 1", "Bob", 11.0)
    assert ev.reason == "rename" and c.resolve("speaker 2") == "Bob"
    with pytest.raises(KeyError):
        c.merge("Bob", "nobody", 12.0)


# ---- offline grouping (enrollment's voice check) ---------------------------------------------


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


@pytest.mark.parametrize("seed", range(6))
def test_average_linkage_groups_match_scipy(seed):
    from scipy.cluster.hierarchy import fcluster, linkage

    rng = np.random.default_rng(seed)
    n_voices = int(rng.integers(1, 5))
    centres = rng.standard_normal((n_voices, 192))
    x = centres[rng.integers(0, n_voices, 60)] + rng.uniform(0.3, 1.5) * rng.standard_normal((60, 192))
    for threshold in (0.3, 0.5, 0.7, 0.9, 1.1):
        ours = average_linkage_groups(x, threshold)
        theirs = fcluster(linkage(x, method="average", metric="cosine"), t=threshold, criterion="distance")
        assert _same_partition(ours, theirs), (seed, threshold)
        assert sorted(set(ours.tolist())) == list(range(len(set(ours.tolist()))))


def test_average_linkage_groups_edge_cases():
    assert average_linkage_groups(np.zeros((0, 4)), 0.5).tolist() == []
    assert average_linkage_groups(np.ones((1, 4)), 0.5).tolist() == [0]
    two_voices = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    labels = average_linkage_groups(two_voices, 0.5)
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert len(set(average_linkage_groups(two_voices, 1.5).tolist())) == 1


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_a_candidate_close_to_a_speaker_is_not_confirmed_with_confirm_below():
    rng = np.random.default_rng(3)
    a = _unit(rng.standard_normal(192))
    other = _unit(rng.standard_normal(192))
    # B's voice: cosine ~0.52 to A (below the assign threshold 0.6, above confirm_below 0.5)
    b = _unit(0.52 * a + np.sqrt(1 - 0.52 ** 2) * _unit(other - (other @ a) * a))
    results = {}
    for confirm_below in (1.0, 0.5):
        config = ClusterConfig(assign_threshold=0.6, new_threshold=0.55, merge_threshold=0.9,
                               confirm_below=confirm_below)
        c = OnlineClusterer(config)
        t = 0.0
        for _ in range(4):
            t += 1.5
            c.observe(a, 1.5, t)
        assert c.clusters[0].confirmed
        for _ in range(4):
            t += 1.5
            c.observe(b, 1.5, t)
        results[confirm_below] = [cl.confirmed for cl in c.clusters]
    assert results[1.0] == [True, True]  # without the rule, B's windows make a second speaker
    assert results[0.5] == [True, False]  # with it, B stays a candidate (no label of its own)
    # a voice unlike A is confirmed either way
    c = OnlineClusterer(ClusterConfig(assign_threshold=0.6, new_threshold=0.55, confirm_below=0.5))
    for i in range(4):
        c.observe(a, 1.5, 1.5 * (i + 1))
    for i in range(4):
        c.observe(other, 1.5, 6 + 1.5 * (i + 1))
    assert [cl.confirmed for cl in c.clusters] == [True, True]


def test_an_expired_candidate_gets_an_enrolled_name_only_at_the_naming_threshold():
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    bob, stranger, anon = (_unit(rng.standard_normal(192)) for _ in range(3))
    config = ClusterConfig(candidate_timeout=5.0, profile_threshold=0.42)
    c = OnlineClusterer(config, [SimpleNamespace(name="Bob", centroid=bob, n_embeddings=10)])
    c.observe(bob, 1.5, 1.5)
    cand = c.observe(stranger, 1.0, 3.0).label  # one window: a candidate, never confirmed
    out = c.observe(bob, 1.5, 10.0)  # the candidate has expired by now
    assert not any(ev.old == cand for ev in out.events)
    assert c.resolve(cand) == cand  # not named Bob: its turns keep their own label
    # with an anonymous speaker confirmed, an expired candidate still maps to the nearest one
    for i in range(4):
        c.observe(anon, 1.5, 11.0 + 1.5 * i)
    assert c.get(c.observe(anon, 1.5, 18.0).label).confirmed
    cand2 = c.observe(stranger, 1.0, 19.0).label  # a new candidate again
    c.observe(anon, 1.5, 30.0)
    assert c.resolve(cand2) == c.observe(anon, 1.5, 31.0).label != cand2


def _speaker(c: OnlineClusterer, label: str, sum_: np.ndarray, speech: float):
    from stream_spk.clustering import Cluster

    cl = Cluster(label=label, sum=sum_.astype(np.float32), count=5, speech=speech, confirmed=True)
    c.clusters.append(cl)
    return cl


def test_finish_absorbs_a_small_speaker_into_its_nearest_bigger_one_only_at_the_threshold():
    base = _centroids(3)
    near = base[0] + 0.8 * base[1]  # cosine ~0.78 to speaker 0's centre, far from speaker 2's
    cfg = ClusterConfig(absorb_speech=3.0, absorb_threshold=0.5)
    c = OnlineClusterer(cfg)
    _speaker(c, "big", base[0], 20.0)
    _speaker(c, "other", base[2], 20.0)
    _speaker(c, "small", near, 1.5)
    _speaker(c, "small far", base[1] - base[0], 1.0)  # unlike everyone: stays
    events = c.finish(30.0)
    assert [(e.old, e.new) for e in events] == [("small", "big")]
    assert c.resolve("small") == "big" and c.get("small far") is not None
    assert c.get("big").speech == pytest.approx(21.5)
    # off by default: nothing changes at the end of a stream
    d = OnlineClusterer()
    _speaker(d, "big", base[0], 20.0)
    _speaker(d, "small", near, 1.5)
    assert d.finish(30.0) == [] and len(d.clusters) == 2


def test_finish_never_absorbs_into_an_enrolled_speaker_or_a_smaller_one():
    base = _centroids(2)
    c = OnlineClusterer(ClusterConfig(absorb_speech=5.0, absorb_threshold=0.3))
    _speaker(c, "Alice", base[0], 0.0).name = "Alice"
    _speaker(c, "a", base[0] + 0.1 * base[1], 2.0)
    _speaker(c, "b", base[0] + 0.2 * base[1], 2.0)  # as small as "a": neither is bigger
    assert c.finish(10.0) == []


def test_finish_judges_smallness_by_the_speech_at_the_end_of_the_stream():
    base = _centroids(3)
    c = OnlineClusterer(ClusterConfig(absorb_speech=4.0, absorb_threshold=0.3))
    _speaker(c, "big", base[0], 20.0)
    _speaker(c, "mid", base[0] + 0.9 * base[1], 3.0)  # ~0.67 to big
    _speaker(c, "tiny", base[1] + 0.3 * base[0], 1.5)  # nearer mid than big
    events = c.finish(30.0)
    # tiny joins mid (4.5 s then), and mid, under 4 s when the stream ended, still joins big
    assert [(e.old, e.new) for e in events] == [("tiny", "mid"), ("mid", "big")]
    assert c.resolve("tiny") == "big"


def _apart_pair(cos: float = 0.5, *, after: float = 30.0, threshold: float = 0.45):
    """Two confirmed speakers whose centroids are ``cos`` apart, side by side from 5 s to 40 s."""
    base = _centroids(2, seed=11)
    u = base[0]
    v = _unit(cos * u + np.sqrt(1 - cos ** 2) * _unit(base[1] - (base[1] @ u) * u))
    c = OnlineClusterer(ClusterConfig(apart_merge_threshold=threshold, apart_after=after))
    a = _speaker(c, "speaker 1", 5 * u, 20.0)
    b = _speaker(c, "speaker 2", 5 * v, 20.0)
    a.created, a.last_seen, b.created, b.last_seen = 0.0, 40.0, 5.0, 40.0
    return c, u, v


def test_speakers_never_heard_at_once_merge_at_the_apart_threshold():
    c, _, v = _apart_pair()
    out = c.observe(v, 1.5, 41.0)  # speaker 2 again: its centroid is 0.5 from speaker 1's
    assert [(e.old, e.new, e.reason) for e in out.events] == [("speaker 2", "speaker 1", "merge")]
    assert c.labels == ["speaker 1"] and c.resolve("speaker 2") == "speaker 1"


@pytest.mark.parametrize("case", ["heard together", "too short side by side", "too far apart", "off"])
def test_the_apart_merge_needs_every_condition(case):
    kwargs = {"too short side by side": {"after": 60.0}, "too far apart": {"cos": 0.4},
              "off": {"threshold": 1.1}}.get(case, {})
    c, _, v = _apart_pair(**kwargs)
    heard = ["speaker 1"] if case == "heard together" else []
    out = c.observe(v, 1.5, 41.0, heard_with=heard)
    assert out.events == () and c.labels == ["speaker 1", "speaker 2"]
    # the evidence stays: later windows heard alone do not merge them either
    assert c.observe(v, 1.5, 42.0).events == ()


@pytest.mark.parametrize("noted", [True, False])
def test_heard_together_follows_a_merge(noted):
    c, u, v = _apart_pair()
    # speaker 3 (a voice near speaker 2's), heard at once with speaker 1, joins speaker 2
    v3 = _unit(v + 0.3 * _centroids(3, seed=12)[2])
    w = _speaker(c, "speaker 3", 5 * v3, 5.0)
    w.created, w.last_seen = 30.0, 40.0
    if noted:
        c._note_together(w, ["speaker 1"])
    out = c.observe(v3, 1.5, 41.0)
    assert [(e.old, e.new) for e in out.events] == [("speaker 3", "speaker 2")]
    later = c.observe(v, 1.5, 42.0).events  # speaker 2 again
    if noted:  # 2 was heard with 1 through 3: no apart merge
        assert later == () and c.labels == ["speaker 1", "speaker 2"]
    else:
        assert [(e.old, e.new) for e in later] == [("speaker 2", "speaker 1")]
