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
import bench_strokes
import bench_video
import decoder_layout
import step_ops
import step_profile


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


def test_bench_step_profiles_the_steps_after_the_timed_ones(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--sizes", "32", "--cutouts", "2", "--steps", "1", "--warmup", "1"]
    assert bench_step.main([*argv, "--no-pixel", "--profile", "2", "--json", str(out)]) == 0
    engine = json.loads(out.read_text())["rows"][-1]
    profile = engine["profile"]
    assert engine["impl"] == "pixgen eager" and profile["steps"] == 2
    kinds = profile["ms_per_step_by_kind"]
    assert sum(kinds.values()) == pytest.approx(profile["busy_ms_per_step"])
    # The VQGAN decoder convolves and CLIP multiplies matrices, whatever the device.
    assert kinds["convolution"] > 0 and kinds["matmul"] > 0
    assert 0 < profile["busy_ms_per_step"] <= 1.5 * profile["wall_ms_per_step"]
    assert profile["top"] and all(entry["ms_per_step"] > 0 for entry in profile["top"])
    # The step's FLOPs by the same kinds, so the profile can say what rate each reaches.
    flops = engine["tflop_per_step_by_kind"]
    assert flops["convolution"] > 0 and flops["matmul"] > 0
    assert sum(flops.values()) == pytest.approx(engine["tflop_per_step"])


def test_decoder_layout_says_why_the_compiled_decoder_is_nchw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert decoder_layout.main(["--size", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "inference graph (64²): NHWC (channels_last)",
        "training graph (64²): NCHW",
    ]
    assert lines[3].strip() == "512 -> 256, 256 -> 128, 128 -> 3"


def test_bench_step_variants_set_speed_options(tmp_path: Path) -> None:
    assert bench_step.parse_variant("eager") == (None, {})
    assert bench_step.parse_variant("reduce-overhead:channels-last:cudnn-heuristics") == (
        "reduce-overhead",
        {"conv_layout": "channels_last", "cudnn_benchmark": False},
    )
    with pytest.raises(SystemExit, match="unknown variant flag 'nhwc'"):
        bench_step.parse_variant("default:nhwc")
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--sizes", "32", "--cutouts", "2", "--steps", "1", "--warmup", "1"]
    modes = "eager,eager:cudnn-heuristics,reduce-overhead"  # compiled ones skipped on the CPU
    assert bench_step.main([*argv, "--modes", modes, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["impl"]) for r in rows if r["impl"].startswith("pixgen")] == [
        ("vqgan 32", "pixgen eager"),
        ("vqgan 32", "pixgen eager:cudnn-heuristics"),
        ("pixel 32", "pixgen eager"),  # the pixel case runs the plain variants only
    ]


def test_a_failing_profiler_costs_its_figures_not_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cupti(self: step_profile.StepProfiler) -> None:
        raise RuntimeError("CUPTI unavailable")

    monkeypatch.setattr(step_profile.StepProfiler, "start", no_cupti)
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--sizes", "32", "--cutouts", "2", "--steps", "1", "--warmup", "1"]
    assert bench_step.main([*argv, "--no-pixel", "--profile", "1", "--json", str(out)]) == 0
    engine = json.loads(out.read_text())["rows"][-1]
    assert engine["its"] > 0 and "profile" not in engine
    assert engine["profile_error"] == "RuntimeError: CUPTI unavailable"


@pytest.mark.parametrize(
    ("kernel", "kind"),
    [
        (
            "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
            "convolution",
        ),
        ("sm90_xmma_dgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32_nhwckrsc_nchw", "convolution"),
        ("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, float>", "layout copy"),
        ("nvjet_tst_128x64_64x8_1x2_h_bz_coopA_NTT", "matmul"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x128x64", "matmul"),
        ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
        ("triton_poi_fused_add_convolution_3", "elementwise (fused)"),
        ("triton_red_fused_native_group_norm_silu_4", "normalisation"),
        ("triton_per_fused_sum_7", "reduction (fused)"),
        ("triton_tem_fused_convolution_0", "convolution"),
        (
            "void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float>",
            "normalisation",
        ),
        (
            "void vision::ops::(anonymous namespace)::roi_align_forward_kernel_impl<float>",
            "cutouts",
        ),
        ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimiser"),
        ("Memcpy DtoD (Device -> Device)", "copy / cast"),
        (
            "void at::native::vectorized_elementwise_kernel<4, at::native::AUnaryFunctor>",
            "elementwise",
        ),
        ("aten::_slow_conv2d_backward", "convolution"),
    ],
)
def test_profile_kinds_follow_the_kernel_names(kernel: str, kind: str) -> None:
    assert step_profile.kind_of(kernel) == kind


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        ("aten.convolution", "convolution"),
        ("aten.convolution_backward", "convolution"),
        ("aten.mm", "matmul"),
        ("aten.addmm", "matmul"),
        ("aten.bmm", "matmul"),
        ("aten._scaled_dot_product_flash_attention", "attention"),
        ("aten._scaled_dot_product_efficient_attention_backward", "attention"),
    ],
)
def test_flop_counter_ops_fall_in_the_profile_kinds(op: str, kind: str) -> None:
    assert step_profile.flop_kind(op) == kind


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


def test_bench_strokes_times_the_rasteriser_and_a_run(tmp_path: Path) -> None:
    out = tmp_path / "strokes.json"
    argv = ["--sizes", "24", "--strokes", "4,8", "--repeats", "1", "--steps", "2"]
    assert bench_strokes.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["size"], r["strokes"]) for r in rows] == [(24, 4), (24, 8)]
    assert all(r["raster_s"] > 0 and r["run_its"] > 0 for r in rows)
