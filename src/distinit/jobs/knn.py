"""kNN classification on frozen features: judge a representation without fine-tuning.

The weighted-vote kNN of self-supervised practice (Wu et al. 2018, DINO's `eval_knn.py`):
cosine similarity to every training feature, the k most similar vote for their class with
weight exp(similarity / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from distinit.engine.runtime import Runtime
from distinit.jobs.features import video_features


def knn_predict(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, k: int,
                num_classes: int, temperature: float = 0.07) -> torch.Tensor:
    """(N, D) training features with (N,) labels, (M, D) test features -> (M, num_classes)
    vote scores. Features need not be normalised; k is capped at N."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    sims, idx = (test @ train.T).topk(min(k, len(train)), dim=1)  # (M, k)
    weights = (sims / temperature).exp()
    votes = torch.zeros(len(test), num_classes, dtype=weights.dtype)
    return votes.scatter_add_(1, train_labels[idx], weights)


def knn_accuracy(net: nn.Module, train_set: Dataset, num_train: int, test_set: Dataset,
                 num_test: int, num_classes: int, ks: tuple[int, ...] = (1, 20),
                 temperature: float = 0.07, runtime: Runtime | None = None) -> dict:
    """Video top-1 of kNN on `net`'s frozen features for each k: {"knn1": ..., "knn20": ...}."""
    train, train_labels, _ = video_features(net, train_set, num_train, runtime=runtime)
    test, test_labels, _ = video_features(net, test_set, num_test, runtime=runtime)
    return {f"knn{k}": 100.0 * (knn_predict(train, train_labels, test, k, num_classes,
                                            temperature).argmax(1) == test_labels).float().mean().item()
            for k in ks}
