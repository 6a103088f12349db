"""kNN on frozen features: the weighted vote against a hand computation, and on real clips."""

import math

import torch
from torch import nn

from distinit.jobs.knn import knn_accuracy, knn_predict


def test_weighted_vote_matches_the_formula():
    train = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # cosine to (1, 0): 1, 0, 0.707
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[3.0, 0.0]])
    scores = knn_predict(train, labels, test, k=2, num_classes=2, temperature=0.5)
    # the two nearest: class 0 at similarity 1, class 1 at 1/sqrt(2)
    assert torch.allclose(scores, torch.tensor([[math.exp(2.0), math.exp(2 / math.sqrt(2))]]))
    all_three = knn_predict(train, labels, test, k=20, num_classes=2, temperature=0.5)  # k capped
    assert torch.allclose(all_three[0, 1], torch.tensor(math.exp(0.0) + math.exp(math.sqrt(2))))
    assert knn_predict(train, labels, test, k=1, num_classes=2).argmax().item() == 0


class _Clips(torch.utils.data.Dataset):
    """Two clips per video; a video's label is which half of the clip is bright."""

    def __init__(self, n_videos, seed):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(2, (n_videos,), generator=g)
        self.noise = torch.rand(n_videos * 2, 3, 2, 4, 4, generator=g) * 0.1

    def __len__(self):
        return len(self.noise)

    def __getitem__(self, i):
        video = self.noise[i].clone()
        half = self.labels[i // 2].item()
        video[..., half * 2:(half + 1) * 2] += 1.0
        return {"video": video, "label": self.labels[i // 2], "video_idx": i // 2, "bad": 0}


def test_knn_accuracy_separates_what_the_features_separate():
    net = nn.Sequential(nn.Flatten(1, 3), nn.Flatten())  # features: the pixels themselves
    train, test = _Clips(20, 0), _Clips(10, 1)
    result = knn_accuracy(net, train, 20, test, 10, num_classes=2)
    assert result == {"knn1": 100.0, "knn20": 100.0}


def test_linear_probe_and_frozen_scores():
    from distinit.jobs.probe import frozen_scores, linear_probe

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 3
    labels = torch.arange(60) % 3
    train = centres[labels] + torch.randn(60, 8, generator=g)
    test = centres[labels[:30]] + torch.randn(30, 8, generator=g)
    logits = linear_probe(train, labels, test, num_classes=3)
    assert logits.shape == (30, 3)
    assert (logits.argmax(1) == labels[:30]).float().mean() > 0.9

    net = nn.Sequential(nn.Flatten(1, 3), nn.Flatten())
    scores = frozen_scores(net, _Clips(20, 0), 20, _Clips(10, 1), 10, num_classes=2)
    assert scores == {"knn1": 100.0, "knn20": 100.0, "probe": 100.0}
