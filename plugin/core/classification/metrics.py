"""Classification metrics (torchmetrics) and per-class thresholds tuned for F-beta.

F-beta (van Rijsbergen): ``F_β = (1 + β²) · P · R / (β² · P + R)``; β = 2 (the Planet Amazon
competition's score) weighs recall four times as much as precision. Multi-label thresholds are
tuned per class on the validation set: for each class the threshold among
:data:`THRESHOLD_GRID` (0.05 … 0.95) with the highest F-beta of that class is kept (ties: the one
closest to 0.5); a class without positives in the validation set keeps 0.5.

Single-label decisions: the class is ``argmax_c(log p_c + o_c)`` with per-class offsets ``o``
(a prior correction: ``o_c = log(π_c / π'_c)`` maps a model trained on priors ``π'`` to priors
``π``, Saerens et al. 2002). :func:`tune_offsets` chooses them on the validation set for the
classes rarer than the most frequent one: each in turn (rarest first, two sweeps) takes the
offset of :data:`OFFSET_GRID` that maximises the mean F1 of those rarer classes (binary: the
minority F1; ties: the offset closest to 0), the most frequent class keeping 0. A class with
fewer than :data:`MIN_TUNING_SUPPORT` validation samples keeps 0.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 4)
OFFSET_GRID = np.round(np.arange(-4.0, 4.001, 0.25), 4)    # log-odds: p × e^±4 (55× either way)
MIN_TUNING_SUPPORT = 3


def fbeta_counts(tp, fp, fn, beta: float):
    """F-beta from counts (arrays broadcast); 0 where there is no positive at all."""
    b2 = beta * beta
    num = (1 + b2) * tp
    den = (1 + b2) * tp + b2 * fn + fp
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, beta: float = 2.0) -> list[float]:
    """Per-class thresholds maximising F-beta. ``probs``, ``targets``: (N, C) float / {0, 1}."""
    probs = np.asarray(probs, np.float32)
    targets = np.asarray(targets) > 0.5
    out = []
    for c in range(probs.shape[1]):
        t = targets[:, c]
        if not t.any():
            out.append(0.5)
            continue
        pred = probs[:, c][None, :] >= THRESHOLD_GRID[:, None]          # (T, N)
        tp = (pred & t).sum(1)
        fp = (pred & ~t).sum(1)
        fn = (~pred & t).sum(1)
        f = fbeta_counts(tp, fp, fn, beta)
        best = np.flatnonzero(f >= f.max() - 1e-12)
        out.append(float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]]))
    return out


def decide(probs: np.ndarray, offsets=None) -> np.ndarray:
    """(N,) int64 single-label decisions ``argmax(log p + offsets)`` of (N, C) probabilities;
    no offsets: the plain argmax."""
    probs = np.asarray(probs, np.float64)
    if offsets is None or not len(probs):
        return probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    return (np.log(np.clip(probs, 1e-12, 1.0)) + np.asarray(offsets, np.float64)).argmax(1)


def _class_f1(pred: np.ndarray, targets: np.ndarray, classes) -> float:
    tp = np.array([np.sum((pred == c) & (targets == c)) for c in classes])
    fp = np.array([np.sum((pred == c) & (targets != c)) for c in classes])
    fn = np.array([np.sum((pred != c) & (targets == c)) for c in classes])
    return float(fbeta_counts(tp, fp, fn, 1.0).mean())


def tune_offsets(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per-class log-probability offsets of the single-label decision (see the module rules).
    ``probs``: (N, C) float softmax outputs; ``targets``: (N,) int class index. Returns C
    floats (all 0 when there is no validation sample or one class)."""
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    n = probs.shape[1] if probs.ndim == 2 else 0
    offsets = np.zeros(n)
    if n < 2 or not len(probs):
        return offsets.tolist()
    support = np.bincount(targets, minlength=n)
    rare = [int(c) for c in np.argsort(support, kind="stable")
            if support[c] >= MIN_TUNING_SUPPORT and c != int(support.argmax())]
    if not rare:
        return offsets.tolist()
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    order = np.argsort(np.abs(OFFSET_GRID), kind="stable")   # ties: closest to 0
    for _ in range(2):
        for c in rare:
            scores = []
            for v in OFFSET_GRID[order]:
                trial = offsets.copy()
                trial[c] = v
                scores.append(_class_f1((logp + trial).argmax(1), targets, rare))
            offsets[c] = OFFSET_GRID[order][int(np.argmax(scores))]
    return [float(v) for v in offsets]


def samples_fbeta(pred: np.ndarray, targets: np.ndarray, beta: float = 2.0) -> float:
    """Mean over samples of the per-sample F-beta of tag sets (the Planet competition score);
    a sample with no true and no predicted tag scores 1."""
    pred, targets = np.asarray(pred) > 0.5, np.asarray(targets) > 0.5
    tp = (pred & targets).sum(1)
    fp = (pred & ~targets).sum(1)
    fn = (~pred & targets).sum(1)
    f = fbeta_counts(tp, fp, fn, beta)
    f = np.where((tp + fp + fn) == 0, 1.0, f)
    return float(f.mean()) if len(f) else 0.0


def apply_thresholds(probs: np.ndarray, thresholds) -> np.ndarray:
    """(N, C) bool: probability ≥ the class's threshold."""
    return np.asarray(probs) >= np.asarray(thresholds, np.float32)[None, :]


def classification_metrics(probs: np.ndarray, targets: np.ndarray, names: list[str],
                           multi_label: bool, thresholds=None, beta: float = 2.0,
                           offsets=None) -> dict:
    """Per-class precision, recall, F1, F-beta, average precision and support, overall
    accuracy (single-label) or sample F-beta (multi-label), and the confusion matrix
    (single-label: (C, C), rows = truth; multi-label: per class [[tn, fp], [fn, tp]]), with
    torchmetrics. Multi-label also gets the sample F-beta at 0.5 thresholds and of the all-tags
    baseline (every class on every sample). ``probs`` (N, C) float; ``targets``: (N,) class
    index or (N, C) {0, 1}; ``offsets``: single-label decision offsets (:func:`decide`; None:
    the argmax)."""
    import torch
    from torchmetrics.functional import classification as tmf

    n = len(names)
    p = torch.as_tensor(np.asarray(probs, np.float32))
    out: dict = {"classes": list(names), "count": int(len(p)), "multi_label": bool(multi_label)}
    if len(p) == 0:
        return out
    if multi_label:
        t = torch.as_tensor(np.asarray(targets)).long()
        th = np.asarray(thresholds if thresholds is not None else [0.5] * n, np.float32)
        pred = torch.as_tensor(apply_thresholds(probs, th)).long()
        # binary metrics column by column: torchmetrics' multilabel ones refuse one class
        # (a tree / no-tree grid model)
        def per_label(fn, x, **kw):
            return torch.stack([fn(x[:, k], t[:, k], **kw) for k in range(n)])

        prec = per_label(tmf.binary_precision, pred)
        rec = per_label(tmf.binary_recall, pred)
        f1 = per_label(tmf.binary_f1_score, pred)
        fb = per_label(tmf.binary_fbeta_score, pred, beta=beta)
        ap = per_label(tmf.binary_average_precision, p)
        cm = per_label(tmf.binary_confusion_matrix, pred)
        support = t.sum(0)
        truth = t.numpy()
        out.update({"samples_fbeta": samples_fbeta(pred.numpy(), truth, beta),
                    "samples_fbeta_at_half": samples_fbeta(probs >= 0.5, truth, beta),
                    "samples_fbeta_all_tags": samples_fbeta(np.ones_like(truth), truth, beta),
                    "thresholds": [float(v) for v in th]})
    else:
        t = torch.as_tensor(np.asarray(targets)).long()
        kw = {"num_classes": n, "average": "none"}
        pred = torch.as_tensor(decide(probs, offsets))
        prec = tmf.multiclass_precision(pred, t, **kw)
        rec = tmf.multiclass_recall(pred, t, **kw)
        f1 = tmf.multiclass_f1_score(pred, t, **kw)
        fb = tmf.multiclass_fbeta_score(pred, t, beta=beta, **kw)
        ap = tmf.multiclass_average_precision(p, t, **kw) if n > 1 else torch.ones(1)
        cm = tmf.multiclass_confusion_matrix(pred, t, num_classes=n)
        support = torch.bincount(t, minlength=n)
        out["accuracy"] = float((pred == t).float().mean())
        if offsets is not None:
            out["offsets"] = [float(v) for v in offsets]
    per = {}
    for k, name in enumerate(names):
        per[name] = {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                     f"f{beta:g}": float(fb[k]), "ap": _finite(float(ap[k])),
                     "support": int(support[k])}
    out["per_class"] = per
    out["macro_f1"] = float(np.mean([v["f1"] for v in per.values()]))
    out["macro_fbeta"] = float(np.mean([v[f"f{beta:g}"] for v in per.values()]))
    out["beta"] = float(beta)
    out["confusion_matrix"] = cm.tolist()
    return out


def _finite(v: float) -> float:
    return v if np.isfinite(v) else 0.0


def metrics_markdown(m: dict, title: str) -> str:
    """Markdown: per-class table and confusion matrix of :func:`classification_metrics`."""
    if not m or not m.get("count"):
        return f"## {title}\n\nNo samples.\n"
    beta = m.get("beta", 2.0)
    fkey = f"f{beta:g}"
    lines = [f"## {title}", "", f"{m['count']} samples."]
    if "accuracy" in m:
        lines.append(f"Overall accuracy: {m['accuracy']:.4f}.")
    if any(m.get("offsets") or []):
        lines.append("Decisions with the offsets tuned on validation (log-probability added "
                     "per class): " + ", ".join(f"{n} {v:+.2f}" for n, v in
                                                zip(m["classes"], m["offsets"])) + ".")
    if "samples_fbeta" in m:
        lines.append(f"Sample-averaged F{beta:g} with the tuned thresholds: "
                     f"{m['samples_fbeta']:.4f} (0.5 thresholds: "
                     f"{m.get('samples_fbeta_at_half', float('nan')):.4f}; every class on "
                     f"every sample: {m.get('samples_fbeta_all_tags', float('nan')):.4f}).")
    lines += ["", f"| class | precision | recall | F1 | F{beta:g} | AP | support |"
                  + (" threshold |" if "thresholds" in m else ""),
              "|---|---|---|---|---|---|---|" + ("---|" if "thresholds" in m else "")]
    for k, (name, v) in enumerate(m["per_class"].items()):
        row = (f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
               f"{v[fkey]:.3f} | {v['ap']:.3f} | {v['support']} |")
        if "thresholds" in m:
            row += f" {m['thresholds'][k]:.3f} |"
        lines.append(row)
    lines += ["", "Confusion matrix (rows: truth, columns: prediction"
                  + ("; per class [[TN, FP], [FN, TP]]" if m["multi_label"] else "") + "):", ""]
    cm = m["confusion_matrix"]
    if m["multi_label"]:
        for name, c in zip(m["classes"], cm):
            lines.append(f"- {name}: {c}")
    else:
        lines.append("| | " + " | ".join(m["classes"]) + " |")
        lines.append("|---|" + "---|" * len(m["classes"]))
        for name, row in zip(m["classes"], cm):
            lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"
