"""The PyTorch-eager side of `npm run bench`: the same workloads as bench/workloads.ts, run by
Debian's python3 with torch 1.13 (the libtorch our addon links). bench/run.ts starts this script
and drives it over stdin, one JSON line per sample, so that samples of both sides interleave:

    in:  {"item": "conv2d.forward", "iterations": 2}
    out: {"seconds": <wall time per iteration>, "cpuSeconds": <process CPU time per iteration>}

The first line written is {"torch": <version>, "threads": <torch.get_num_threads()>, "blas": <BLAS_INFO>}.
Usage: /usr/bin/python3 bench/torch_eager.py --threads N
"""
import argparse
import json
import re
import sys
import time

import torch
import torch.nn.functional as F


def add_new():
    a, b = torch.randn(16), torch.randn(16)

    def run(iterations):
        for _ in range(iterations):
            a.add(b)

    return run


def add_inplace():
    a, b = torch.randn(16), torch.randn(16)

    def run(iterations):
        for _ in range(iterations):
            a.add_(b)

    return run


def matmul():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def run(iterations):
        for _ in range(iterations):
            torch.matmul(a, b)

    return run


def conv_tensors():
    x = torch.randn(8, 128, 64, 64, requires_grad=True)
    w = (torch.randn(128, 128, 3, 3) / (128 * 9) ** 0.5).requires_grad_()
    return x, w


def conv2d_forward():
    x, w = conv_tensors()

    def run(iterations):
        with torch.no_grad():
            for _ in range(iterations):
                F.conv2d(x, w, None, stride=1, padding=1)

    return run


def conv2d_forward_backward():
    x, w = conv_tensors()
    grad_out = torch.randn(8, 128, 64, 64)

    def run(iterations):
        for _ in range(iterations):
            F.conv2d(x, w, None, stride=1, padding=1).backward(grad_out)
            x.grad = None
            w.grad = None

    return run


def mlp_step():
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.GELU(), torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 10)
    )
    # foreach=False is 1.13's default on CPU: the per-parameter loop that src/optim/adam.ts follows.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    x = torch.randn(256, 784)
    target = torch.randint(0, 10, (256,))

    def run(iterations):
        for _ in range(iterations):
            F.cross_entropy(model(x), target).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


WORKLOADS = {
    "add": add_new,
    "add_": add_inplace,
    "matmul": matmul,
    "conv2d.forward": conv2d_forward,
    "conv2d.forward+backward": conv2d_forward_backward,
    "mlp.step": mlp_step,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    ready = {"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas.group(1) if blas else "unknown"}
    print(json.dumps(ready), flush=True)
    runs = {}
    for line in sys.stdin:
        request = json.loads(line)
        item = request["item"]
        if item not in WORKLOADS:
            sys.exit(f"torch_eager.py: unknown item {item!r} (known: {', '.join(WORKLOADS)})")
        if item not in runs:
            runs[item] = WORKLOADS[item]()
        iterations = int(request["iterations"])
        start, cpu_start = time.perf_counter(), time.process_time()
        runs[item](iterations)
        seconds = (time.perf_counter() - start) / iterations
        cpu_seconds = (time.process_time() - cpu_start) / iterations
        print(json.dumps({"seconds": seconds, "cpuSeconds": cpu_seconds}), flush=True)


if __name__ == "__main__":
    main()
