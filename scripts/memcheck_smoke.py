"""Every torchcorr CUDA op on a few small problems, for compute-sanitizer (scripts/gpu_check.sh).

Covers staged and unstaged weights, grouped, strided, dilated and padded problems, many reduction
chunks, the implicit GEMM and plane-tile kernels, float32 and float16; exits non-zero when a result differs from F.conv2d, which runs on the CPU
so that the GPU runs little besides torchcorr's kernels.
"""

import sys

import torch
import torch.nn.functional as F

import torchcorr

PROBLEMS = [  # (N, C, H, W, K, kh, kw, stride, padding, dilation, groups)
    (2, 4, 9, 11, 6, 3, 2, (2, 1), (1, 0), (1, 2), 2),
    (1, 600, 5, 6, 2, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # weights too large to stage
    (1, 1, 200, 190, 1, 5, 5, (1, 1), (2, 2), (1, 1), 1),  # many reduction chunks
    (3, 8, 7, 7, 8, 3, 3, (1, 1), (1, 1), (1, 1), 8),  # depthwise
    (2, 2, 1, 1, 3, 3, 3, (1, 1), (2, 2), (1, 1), 1),  # taps in the padding only
    (2, 40, 9, 11, 70, 3, 3, (2, 1), (1, 1), (1, 1), 1),  # implicit GEMM, ragged tiles, strided
    (3, 64, 7, 6, 96, 2, 3, (1, 1), (1, 0), (2, 1), 2),  # implicit GEMM, groups, dilation
    (2, 6, 37, 33, 6, 5, 5, (2, 2), (2, 2), (1, 1), 6),  # plane tiles, depthwise, strided
    (2, 32, 15, 14, 48, 1, 1, (2, 2), (0, 0), (1, 1), 1),  # input gradient phases no tap reaches
]


def main():
    torch.manual_seed(0)
    worst = 0.0
    for dtype in (torch.float32, torch.float16):
        for n, c, h, w, k, kh, kw, stride, padding, dilation, groups in PROBLEMS:
            config = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
            x = torch.randn(n, c, h, w, device="cuda", dtype=dtype, requires_grad=True)
            weight = torch.randn(k, c // groups, kh, kw, device="cuda", dtype=dtype, requires_grad=True)
            bias = torch.randn(k, device="cuda", dtype=dtype, requires_grad=True)
            y = torchcorr.corr2d(x, weight, bias, **config)
            grads = torch.autograd.grad(y, (x, weight, bias), torch.ones_like(y))
            leaves = [t.detach().cpu().double().requires_grad_() for t in (x, weight, bias)]  # reference on the CPU
            y_ref = F.conv2d(*leaves, **config)
            grads_ref = torch.autograd.grad(y_ref, leaves, torch.ones_like(y_ref))
            for got, want in zip((y, *grads), (y_ref, *grads_ref)):
                worst = max(worst, ((got.cpu().double() - want).norm() / want.norm().clamp_min(1e-30)).item())
    torch.cuda.synchronize()
    print(f"memcheck smoke: {len(PROBLEMS)} problems x 2 dtypes, worst relative error {worst:.2g}")
    if worst > 1e-2:
        sys.exit("memcheck smoke: results differ from F.conv2d")


if __name__ == "__main__":
    main()
