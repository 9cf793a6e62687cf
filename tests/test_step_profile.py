"""What ``ftadapt bench train-step`` says about where a step's time goes: G's FLOPs per step (checked against the
convolution arithmetic by hand), the per-step profile summary, and the kernel categories it reports."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ftadapt.bench.step_profile import DeviceEvent, TrafficCounter, busy_time_us, kernel_category, model_cost, summarize
from ftadapt.bench.train_step import BENCH_DEFAULTS, bench_train_step
from ftadapt.config import build_config
from ftadapt.models.registry import create_model


def _conv_forward_flops(net: nn.Module, size_wh: tuple[int, int]) -> dict[str, float]:
    """2 · (C_in / groups) · k_h · k_w · C_out · H_out · W_out per convolution, from hooks on a real forward."""
    flops: dict[str, float] = {}

    def hook(name):
        def record(module, inputs, output):
            k_h, k_w = module.kernel_size
            flops[name] = 2.0 * module.in_channels // module.groups * k_h * k_w * output.numel()
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size_wh[1], size_wh[0]))
    for handle in handles:
        handle.remove()
    return flops


def test_model_flops_are_forward_plus_both_gradients_of_every_convolution():
    # Backward costs one input gradient and one weight gradient per conv, each as much as its forward; the stem's
    # input (the image) needs no gradient. Two domains add up.
    sizes = [(96, 64), (64, 48)]
    net = create_model("tiny").eval()
    expected = 0.0
    for size in sizes:
        per_conv = _conv_forward_flops(net, size)
        expected += 3 * sum(per_conv.values()) - per_conv["conv1"]
    assert model_cost("tiny", sizes)["flops"] == pytest.approx(expected, rel=1e-9)


def test_traffic_counts_what_each_operator_reads_and_writes():
    x = torch.empty(10, 10, device="meta")  # 400 bytes
    with TrafficCounter() as counter:
        y = x + x  # reads 2 × 400, writes 400
        y.t().add_(1.0)  # the view moves nothing; the in-place add reads and writes 400
        y.detach()
    assert counter.bytes == 1200 + 800
    fp32, bf16 = model_cost("tiny", [(64, 48)])["bytes"], model_cost("tiny", [(64, 48)], torch.bfloat16)["bytes"]
    assert 0.5 * fp32 < bf16 < 0.6 * fp32  # half the bytes, plus the loss read in float32


def test_kernel_categories_of_real_kernel_names():
    names = {
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64": "convolution",
        "sm90_xmma_wgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32_nhwckrsc_nhwc": "convolution",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "gemm",
        "triton_poi_fused__native_batch_norm_legit_functional_convolution_relu_0": "triton (torch.compile)",
        "void at::native::batch_norm_collect_statistics_channels_last_kernel<float, c10::BFloat16>": "batch_norm",
        "void at::native::(anonymous namespace)::upsample_bilinear2d_backward_out_frame<float, float>": "upsample",
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>": "elementwise",
        "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float>": "softmax/loss",
        "void at::native::fused_sgd_kernel<float>": "optimizer",
        "Memcpy HtoD (Pinned -> Device)": "copy/memset/layout",
        "void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16>": "copy/memset/layout",
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>": "reduce",
        "some_custom_kernel": "other",
    }
    assert {name: kernel_category(name) for name in names} == names


def test_busy_time_is_the_union_of_kernel_intervals():
    events = [DeviceEvent("a", 0, 10), DeviceEvent("b", 5, 12), DeviceEvent("c", 6, 8), DeviceEvent("d", 20, 25)]
    assert busy_time_us(events) == 17.0
    assert busy_time_us([]) == 0.0


def test_summary_is_per_step():
    conv = "sm90_xmma_fprop_implicit_gemm_bf16"
    bn = "batch_norm_transform_input_channels_last_kernel"
    events = [DeviceEvent(conv, 0, 4000), DeviceEvent(bn, 4000, 5000),  # step 1: 5 ms busy
              DeviceEvent(conv, 10_000, 14_000), DeviceEvent(bn, 16_000, 17_000)]  # step 2: 5 ms busy
    host = [("aten::convolution", 300.0), ("aten::batch_norm", 100.0)] * 2
    report = summarize(events, host, launches=8, launch_cpu_us=40.0, steps=2, wall_s=0.02)
    assert report["wall_ms_per_step"] == 10.0 and report["launches_per_step"] == 4.0
    assert report["host_ops_per_step"] == 2.0 and report["host_op_self_ms_per_step"] == 0.4
    assert report["top_host_ops"][0] == {"name": "aten::convolution", "calls_per_step": 1.0, "ms_per_step": 0.3}
    device = report["device"]
    assert (device["kernels_per_step"], device["busy_ms_per_step"], device["busy_share"]) == (2.0, 5.0, 0.5)
    assert device["kernel_ms_per_step_by_category"] == {"convolution": 4.0, "batch_norm": 1.0}
    assert [k["name"] for k in device["top_kernels"]] == [conv, bn]
    assert summarize([], host, 0, 0.0, steps=2, wall_s=0.02)["device"] is None  # a CPU run has no device timeline


def test_bench_reports_flops_and_a_profile_on_the_cpu():
    report = bench_train_step(build_config({**BENCH_DEFAULTS, "device": "cpu"}), steps=2, warmup=0, profile=1,
                              progress=False)
    cost = model_cost("tiny", [(160, 96), (128, 64)])
    assert report["model_tflop_per_step"] == pytest.approx(cost["flops"] / 1e12)
    assert report["model_tflops_achieved"] == pytest.approx(cost["flops"] / 1e12 * report["steps_per_s"])
    assert report["model_unfused_gb_per_step"] == pytest.approx(cost["bytes"] / 1e9)
    profile = report["profile"]
    assert profile["profiled_steps"] == 1 and profile["device"] is None
    assert profile["host_ops_per_step"] > 100  # every aten op the host dispatched for one clan-norm step
    assert "aten::convolution_backward" in {op["name"] for op in profile["top_host_ops"]}


def test_a_failing_profiler_keeps_the_timing(monkeypatch):
    import ftadapt.bench.train_step as train_step

    def broken(*args, **kwargs):
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    monkeypatch.setattr(train_step, "profile_steps", broken)
    report = bench_train_step(build_config({**BENCH_DEFAULTS, "method": "source-only", "device": "cpu"}), steps=1,
                              warmup=0, profile=1, progress=False)
    assert report["steps_per_s"] > 0 and report["timed_steps"] == 1
    assert report["profile"] == {"error": "RuntimeError: CUPTI_ERROR_NOT_INITIALIZED"}
