"""The benchmarks run end to end on the CPU at a tiny size.

They are what a lent GPU's few minutes are spent on, so a benchmark broken by a change in
the engine must show up here, not on the device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_step
import bench_video
import step_ops


def test_bench_step_times_every_case_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--sizes", "32", "--cutouts", "2", "--steps", "1"]
    assert bench_step.main([*argv, "--warmup", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["impl"]) for r in rows] == [
        ("vqgan 32", "reference fp32"),
        ("vqgan 32", "reference bf16"),
        ("vqgan 32", "pixgen eager"),
        ("pixel 32", "pixgen eager"),
    ]
    assert all(r["its"] > 0 for r in rows)
    assert rows[2]["tflop_per_step"] > 0 and rows[2]["achieved_tflops"] > 0


@pytest.mark.parametrize(
    "guide", [["--guide", "target"], ["--guide", "clip", "--clip-model", "pixgen/shapes"]]
)
def test_bench_video_compares_a_video_run_with_a_bare_one(tmp_path: Path, guide: list[str]) -> None:
    out = tmp_path / "video.json"
    argv = ["--device", "cpu", "--size", "64", "--steps", "4", "--repeats", "1", "--cutouts", "2"]
    assert bench_video.main([*argv, *guide, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["steps_recorded"] == [4] and report["dropped"] == [0]
    for speed in ("loop", "e2e"):
        assert report[speed]["no_outputs_it_s"] > 0 and report[speed]["video_it_s"] > 0
    assert report["guide"].startswith("clip" if "clip" in guide else "target_image")


def test_step_ops_splits_a_step_into_its_parts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--device", "cpu", "--size", "32", "--cutouts", "2", "--warmup", "1"]
    assert step_ops.main(argv) == 0
    out = capsys.readouterr().out
    total = int(out.split("operations dispatched in one step: ")[1].split()[0])
    parts = {
        line.split(":")[0].split(maxsplit=1)[1]: int(line.split()[0])
        for line in out.splitlines()[1:]
    }
    assert set(parts) == {
        "backward",
        "CLIP image tower forward",
        "VQGAN decoder forward",
        "rest",
    }
    assert sum(parts.values()) == total and parts["VQGAN decoder forward"] > 100
