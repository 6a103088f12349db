"""Tools beside training: benchmarks, the papers' figures, Grad-CAM attribution."""
