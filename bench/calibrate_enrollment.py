"""Calibrate enrollment thresholds: same- vs different-speaker cosines of 1.5 s speech windows.

    python bench/calibrate_enrollment.py [--precision bf16] [--enroll-dir ../shared/data/enroll]

Uses the real ECAPA weights and silero-vad speech regions of the VCTK enrollment utterances
(``data/enroll/vctk_p22{5,6,7,8}/*.wav``: 3 utterances of 4 speakers). Prints percentiles of
window-to-window cosines, of an enrolled centroid to the windows and centroids of others, and how
agglomerative clustering (average linkage, cosine) splits one- and two-voice recordings.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def silero_regions(samples: np.ndarray) -> list[tuple[int, int]]:
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad()
    ts = get_speech_timestamps(torch.from_numpy(samples), model, sampling_rate=16000)
    return [(t["start"], t["end"]) for t in ts]


def pct(x, qs=(0, 1, 5, 25, 50, 75, 95, 99, 100)) -> str:
    x = np.asarray(x)
    return f"n={x.size:5d} " + " ".join(f"p{q}={np.percentile(x, q):+.3f}" for q in qs)


def main() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage

    from stream_spk.enrollment import _main_voice, speech_windows
    from stream_spk.models.embedder import Embedder

    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--enroll-dir", default=str(ROOT.parent / "shared" / "data" / "enroll"))
    args = ap.parse_args()
    emb = Embedder.from_checkpoint(precision=args.precision, device="cpu", quiet=True)

    spk_of, utt_of, vecs = [], [], []
    for d in sorted(Path(args.enroll_dir).glob("vctk_p22*")):
        for f in sorted(d.glob("*.wav")):
            x, sr = sf.read(f, dtype="float32")
            assert sr == 16000
            wins = speech_windows(silero_regions(x))
            e = emb.embed([x[s:t] for s, t in wins])
            vecs.append(e)
            spk_of += [d.name] * len(e)
            utt_of += [f.stem] * len(e)
    V = np.concatenate(vecs)
    spk, utt = np.array(spk_of), np.array(utt_of)
    C = V @ V.T
    iu = np.triu_indices(len(V), 1)
    same = spk[iu[0]] == spk[iu[1]]
    same_utt = utt[iu[0]] == utt[iu[1]]
    print(f"{len(V)} windows of {len(set(spk))} speakers")
    print("window-window same speaker, same utterance :", pct(C[iu][same & same_utt]))
    print("window-window same speaker, other utterance:", pct(C[iu][same & ~same_utt]))
    print("window-window different speakers           :", pct(C[iu][~same]))

    def centroid(mask):
        c = V[mask].mean(0)
        return c / np.linalg.norm(c)

    # Enrolled centroid from 2 utterances vs the held-out utterance of the same / other speakers.
    same_c, diff_c, same_w, diff_w = [], [], [], []
    for s in sorted(set(spk)):
        utts = sorted(set(utt[spk == s]))
        for held in utts:
            c = centroid((spk == s) & (utt != held))
            same_c.append(c @ centroid(utt == held))
            same_w += list(V[utt == held] @ c)
            for o in sorted(set(spk) - {s}):
                diff_c.append(c @ centroid(spk == o))
                diff_w += list(V[spk == o] @ c)
    print("centroid(2 utts) vs held-out utt centroid, same :", pct(same_c))
    print("centroid(2 utts) vs other speaker centroid       :", pct(diff_c))
    print("centroid(2 utts) vs held-out windows, same       :", pct(same_w))
    print("centroid(2 utts) vs other speaker windows        :", pct(diff_w))
    utt_cents = {u: centroid(utt == u) for u in sorted(set(utt))}
    sc, dc = [], []
    for a, b in itertools.combinations(utt_cents, 2):
        (sc if a[:4] == b[:4] else dc).append(utt_cents[a] @ utt_cents[b])
    print("utterance centroid vs utterance centroid, same   :", pct(sc))
    print("utterance centroid vs utterance centroid, diff   :", pct(dc))

    # Agglomerative clustering of one voice (one speaker's 3 utterances) and of two voices.
    for thr in (0.5, 0.6, 0.7, 0.8):
        split_one, found_two, group_cos = 0, 0, []
        for s in sorted(set(spk)):
            m = spk == s
            lab = fcluster(linkage(V[m].astype(float), "average", "cosine"), thr, "distance") - 1
            sizes = np.bincount(lab)
            if len(sizes) > 1 and np.sort(sizes)[-2] >= 0.25 * m.sum():
                split_one += 1
        pairs = list(itertools.combinations(sorted(set(spk)), 2))
        for a, b in pairs:
            m = (spk == a) | (spk == b)
            lab = fcluster(linkage(V[m].astype(float), "average", "cosine"), thr, "distance") - 1
            sizes = np.bincount(lab)
            order = np.argsort(sizes)[::-1]
            if len(sizes) > 1 and sizes[order[1]] >= 0.25 * m.sum():
                found_two += 1
                ca = V[m][lab == order[0]].mean(0)
                cb = V[m][lab == order[1]].mean(0)
                group_cos.append(ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb))
        print(f"AHC threshold {thr}: one voice split into >=25% second group {split_one}/4; "
              f"two voices found {found_two}/{len(pairs)}; group centroid cos "
              f"{np.round(group_cos, 3).tolist()}")

    # The enrollment's own decision (_main_voice, with its constants) on realistic recordings:
    # one speaker alone (each utterance; all three), and one speaker's utterances plus one
    # utterance of another speaker (the other voice holds roughly 20-50% of the speech).
    secs = np.full(len(V), 1.5)
    alone = [(spk == s) for s in sorted(set(spk))] + [(utt == u) for u in sorted(set(utt))]
    false_alarm = [_main_voice(V[m], secs[m])[1] for m in alone]
    print(f"one voice: share set aside max {max(false_alarm):.2f} over {len(alone)} recordings")
    shares, found = [], 0
    for a, b in itertools.permutations(sorted(set(spk)), 2):
        for ua in [sorted(set(utt[spk == a]))[:1], sorted(set(utt[spk == a]))]:
            for ub in sorted(set(utt[spk == b])):
                m = np.isin(utt, ua) | (utt == ub)
                true_share = min((utt[m] == ub).mean(), (utt[m] != ub).mean())  # the minor voice
                share = _main_voice(V[m], secs[m])[1]
                shares.append((round(float(true_share), 2), round(share, 2)))
                found += share >= 0.25 and true_share >= 0.25
    n25 = sum(t >= 0.25 for t, _ in shares)
    err = max(abs(t - a) for t, a in shares)
    print(f"two voices: warned on {found}/{n25} mixtures where the minor voice holds >= 25% "
          f"({len(shares)} mixtures); max |minor share - share set aside| {err:.2f}")


if __name__ == "__main__":
    main()
