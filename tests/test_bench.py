"""`distinit bench` runs every stage through the code a run uses and prints the table."""

import re

from distinit.cli import main

ROWS = ("student step only", "teacher only", "distill, live teacher", "distill, cached targets",
        "data only, decode", "data only, clip store", "end to end, cached targets, decode",
        "end to end, cached targets, clip store", "end to end, live teacher, decode",
        "naive baseline")


def test_bench_prints_every_stage_with_ratios(tmp_path, capsys):
    table = tmp_path / "bench.md"
    assert main(["bench", "--preset", "demo", "--batch", "4", "--num-videos", "8", "--steps",
                 "1", "--warmup", "0", "--workers", "0", "--device", "cpu", "--work",
                 str(tmp_path / "work"), "--markdown", str(table)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(table.read_text().strip())
    for row in ROWS:
        line = next(x for x in out.splitlines() if x.startswith(f"| {row}"))
        clips_s, ratio = re.findall(r"\| ([\d.]+)x? ", line)[:2]
        assert float(clips_s) > 0 and float(ratio) > 0
    assert re.search(r"[\d.]+ GFLOP per clip", out)
    assert "target cache: 8 videos" in out and "clip store:" in out
    # a second run reuses the videos, the cache and the store it wrote
    assert main(["bench", "--preset", "demo", "--batch", "4", "--steps", "1", "--warmup", "0",
                 "--workers", "0", "--device", "cpu", "--work", str(tmp_path / "work")]) == 0
    assert "wrote" not in capsys.readouterr().out
