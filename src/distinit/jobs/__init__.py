"""Jobs: pretrain, fine-tune, evaluate, train an image network, extract features, store clips."""
