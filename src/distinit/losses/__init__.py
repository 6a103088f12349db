"""Losses: pure functions, tensors in and a loss out (distillation, contrastive)."""
