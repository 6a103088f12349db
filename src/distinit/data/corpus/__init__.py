"""Which videos a run saw (the corpus record), a corpus's size from a sample."""
