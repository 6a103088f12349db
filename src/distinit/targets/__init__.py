"""Frozen still-image teachers and the targets they give a video student (paper, Section 3.1).

- `frames.py`: which frames of a clip the teachers see, and those frames as [0, 1] pixels;
- `teachers.py`: the teachers built from `distill.teachers`, Eq. 1, the entropy filter, and
  `TeacherTargets`, the frozen part a method registers (live teachers or cached logits);
- `holdout.py`: how well a student agrees with its teachers on held-out clips;
- `cache.py`: `distinit cache-targets`, the teachers' logits stored once for the corpus.
"""
