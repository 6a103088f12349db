"""Which frames make a clip (plain, pretext and RSPNet samplers), transforms and colour steps, views, datasets."""
