"""Frozen-feature evaluation: kNN and a linear probe on pooled video features, no fine-tuning.

Features are extracted once per set (the mean over each video's K test clips); the kNN is the
temperature-weighted vote of `knn.py`, the probe a multinomial logistic regression on
standardised features (full-batch L-BFGS, L2 penalty), the linear evaluation of
self-supervised practice without its many epochs of SGD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from distinit.engine.runtime import Runtime
from distinit.jobs.features import video_features
from distinit.jobs.knn import knn_predict


def linear_probe(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                 num_classes: int, weight_decay: float = 1e-3, steps: int = 100) -> torch.Tensor:
    """Fit softmax regression on (N, D) features, return (M, num_classes) test logits."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    x, xt = (train.double() - mean) / std, (test.double() - mean) / std
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, train_labels) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (xt @ w + b).detach()


@torch.no_grad()
def frozen_scores(net: nn.Module, train_set: Dataset, num_train: int, test_set: Dataset,
                  num_test: int, num_classes: int, ks: tuple[int, ...] = (1, 20),
                  runtime: Runtime | None = None, batch_size: int = 64,
                  keep_features: bool = False) -> dict:
    """Video top-1 (%) of kNN for each k (`knn1`, `knn20`) and of the linear probe (`probe`);
    with `keep_features`, also `features`: the test set's features and labels."""
    train, train_labels, _ = video_features(net, train_set, num_train, runtime=runtime,
                                            batch_size=batch_size)
    test, test_labels, _ = video_features(net, test_set, num_test, runtime=runtime,
                                          batch_size=batch_size)

    def acc(scores: torch.Tensor) -> float:
        return 100.0 * (scores.argmax(1) == test_labels).float().mean().item()

    out = {f"knn{k}": acc(knn_predict(train, train_labels, test, k, num_classes)) for k in ks}
    with torch.enable_grad():
        out["probe"] = acc(linear_probe(train, train_labels, test, num_classes))
    if keep_features:
        out["features"] = {"test": test, "test_labels": test_labels}
    return out
