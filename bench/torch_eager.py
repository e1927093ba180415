"""The PyTorch-eager side of `npm run bench`: the same workloads as bench/workloads.ts, run by
Debian's python3 with torch 1.13 (the libtorch our addon links). bench/run.ts starts this script
and drives it over stdin, one JSON line per sample, so that samples of both sides interleave:

    in:  {"item": "conv2d.forward", "iterations": 2, "batch": null, "precision": "fp32"}
    out: {"seconds": <wall time per iteration>, "cpuSeconds": <process CPU time per iteration>}
         or {"error": <the workload's exception>}

The model items run the reference networks that the parity fixtures were made with
(test/fixtures/make_*.py, checked against upstream), with their constructors' random weights,
at the batch size of the request: the forward items in eval mode under no_grad, the training items
(align.step, sit.train.step) in train mode with backward, optimizer step and EMA update.

With --device cuda the tensors and models are on the GPU and each sample ends with a synchronize.

"precision": "bf16" runs a model item's forwards under torch.autocast(device, torch.bfloat16), the
losses on float32 outputs and backward and the optimizer outside, as reals' trainers and samplers do.
torch 1.13's CPU autocast does not list group_norm (CUDA's does), and its group_norm kernel refuses a
bfloat16 input with float32 weights: under bf16 nn.GroupNorm normalizes in float32, as reals does.

The first line written is {"torch": <version>, "threads": <torch.get_num_threads()>, "blas": <BLAS_INFO>,
"device": <"cpu", or the GPU's name>}.
Usage: /usr/bin/python3 bench/torch_eager.py --threads N [--device cuda]
"""
import argparse
import json
import os
import re
import sys
import time

import torch
import torch.nn.functional as F

# The fixture scripts' reference networks, imported without leaving __pycache__ folders in the repository.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures"))
import make_autoencoder_kl  # noqa: E402
import make_dinov2  # noqa: E402
import make_inception  # noqa: E402
import make_sit  # noqa: E402

DEVICE = torch.device("cpu")  # set once by main() from --device


def autocast(precision):
    return torch.autocast(DEVICE.type, torch.bfloat16, enabled=precision == "bf16")


def group_norm_float32(self, x):
    x = x.float() if self.weight is not None and x.dtype != self.weight.dtype else x
    return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


torch.nn.GroupNorm.forward = group_norm_float32


def add_new():
    a, b = torch.randn(16, device=DEVICE), torch.randn(16, device=DEVICE)

    def run(iterations):
        for _ in range(iterations):
            a.add(b)

    return run


def add_inplace():
    a, b = torch.randn(16, device=DEVICE), torch.randn(16, device=DEVICE)

    def run(iterations):
        for _ in range(iterations):
            a.add_(b)

    return run


def matmul():
    a, b = torch.randn(1024, 1024, device=DEVICE), torch.randn(1024, 1024, device=DEVICE)

    def run(iterations):
        for _ in range(iterations):
            torch.matmul(a, b)

    return run


def matmul_bf16():
    a, b = (torch.randn(2048, 2048, device=DEVICE).bfloat16() for _ in range(2))

    def run(iterations):
        for _ in range(iterations):
            torch.matmul(a, b)

    return run


def conv_tensors():
    x = torch.randn(8, 128, 64, 64, device=DEVICE, requires_grad=True)
    w = (torch.randn(128, 128, 3, 3, device=DEVICE) / (128 * 9) ** 0.5).requires_grad_()
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
    grad_out = torch.randn(8, 128, 64, 64, device=DEVICE)

    def run(iterations):
        for _ in range(iterations):
            F.conv2d(x, w, None, stride=1, padding=1).backward(grad_out)
            x.grad = None
            w.grad = None

    return run


def mlp_step():
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.GELU(), torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 10)
    ).to(DEVICE)
    # foreach=False is 1.13's default on CPU: the per-parameter loop that src/optim/adam.ts follows
    # (PyTorch 2.x picks foreach on CUDA by default; the bench compares the same algorithm).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    x = torch.randn(256, 784, device=DEVICE)
    target = torch.randint(0, 10, (256,), device=DEVICE)

    def run(iterations):
        for _ in range(iterations):
            F.cross_entropy(model(x), target).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def inference(precision, forward):
    def run(iterations):
        with torch.no_grad(), autocast(precision):
            for _ in range(iterations):
                forward()

    return run


def sd_vae():
    # diffusers' config of stabilityai/sd-vae-ft-mse (AUTOENCODER_KL_CONFIGS['sd-vae'] in src/models/autoencoder-kl.ts).
    config = {**make_autoencoder_kl.config([128, 256, 512, 512], 32), "layers_per_block": 2}
    return make_autoencoder_kl.AutoencoderKL(config).eval().to(DEVICE)


def vae_encode(batch, precision):
    vae = sd_vae()
    x = torch.rand(batch, 3, 256, 256, device=DEVICE) * 2 - 1
    return inference(precision, lambda: vae.encode(x).mode())


def vae_decode(batch, precision):
    vae = sd_vae()
    z = torch.randn(batch, 4, 32, 32, device=DEVICE)
    return inference(precision, lambda: vae.decode(z))


def dinov2_forward(batch, precision):
    # dinov2/hub/backbones.py dinov2_vitb14.
    model = make_dinov2.DinoVisionTransformer(img_size=518, patch_size=14, embed_dim=768, depth=12, num_heads=12,
                                              init_values=1.0, ffn_layer="mlp", interpolate_offset=0.1).eval().to(DEVICE)
    x = torch.randn(batch, 3, 224, 224, device=DEVICE)
    return inference(precision, lambda: model.forward_features(x))


def sit(depth, hidden_size, num_heads, input_size=32, num_classes=1000):
    return make_sit.Model(True, input_size=input_size, patch_size=2, in_channels=4, hidden_size=hidden_size, depth=depth,
                          num_heads=num_heads, num_classes=num_classes).eval().to(DEVICE)


# The tiny SiT of the README's own-data walkthrough (bench/workloads.ts TINY_SIT): 4x8x8 latents, 5 classes.
TINY_SIT = dict(depth=4, hidden_size=128, num_heads=4, input_size=8, num_classes=5)
SIT_B2 = dict(depth=12, hidden_size=768, num_heads=12)
SIT_S2 = dict(depth=12, hidden_size=384, num_heads=6)


def sit_forward(batch, precision):
    model = sit(**SIT_B2)
    x = torch.randn(batch, 4, 32, 32, device=DEVICE)
    t = torch.rand(batch, device=DEVICE)
    y = torch.randint(0, 1000, (batch,), device=DEVICE)
    return inference(precision, lambda: model(x, t, y))


def sit_sample(cfg_scale, config=SIT_S2, steps=51):
    """SiT's sample.py with --sampling-method euler --num-sampling-steps 51 (50 steps): torchdiffeq's
    fixed-grid Euler over th.linspace(0, 1, 51) of the Linear path's velocity; with guidance the batch
    is doubled with the null class and the model is forward_with_cfg."""

    def workload(batch, precision):
        model = sit(**config)
        classes = config.get("num_classes", 1000)
        side = config.get("input_size", 32)
        labels = torch.tensor([(i * 97) % classes for i in range(batch)], device=DEVICE)
        grid = torch.linspace(0, 1, steps)

        def sample():
            torch.manual_seed(0)
            z = torch.randn(batch, 4, side, side).to(DEVICE)
            if cfg_scale > 1:
                z = torch.cat([z, z], 0)
                y = torch.cat([labels, torch.full_like(labels, classes)])
                model_fn = lambda x, t, y: model.forward_with_cfg(x, t, y, cfg_scale)  # noqa: E731
            else:
                y = labels
                model_fn = model.forward
            for t0, t1 in zip(grid[:-1], grid[1:]):
                z = z + (t1 - t0) * model_fn(z, torch.ones(z.shape[0], device=DEVICE) * t0, y).float()
            return z[:batch]

        return inference(precision, sample)

    return workload


# Training steps, as src/train/align.ts and src/train/sit.ts take them (bench/workloads.ts composes the same).

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class AlignmentHeads(torch.nn.Module):
    """src/models/alignment.ts's heads at their defaults: MLP_patch and MLP_cls are REPA's build_mlp
    (Linear, SiLU, Linear, SiLU, Linear; hidden 1024); MLP_cls averages over positions after its
    first Linear and SiLU ('mean' pooling)."""

    def __init__(self, latent_channels, feature_dim, hidden_dim=1024):
        super().__init__()

        def mlp():
            return torch.nn.Sequential(torch.nn.Linear(latent_channels, hidden_dim), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden_dim, hidden_dim), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden_dim, feature_dim))

        self.mlp_patch = mlp()
        self.mlp_cls = mlp()

    def forward(self, z):
        tokens = z.flatten(2).transpose(1, 2)
        cls = self.mlp_cls[2:](self.mlp_cls[:2](tokens).mean(1))
        return self.mlp_patch(tokens), cls


def update_ema(ema_model, model, decay):
    """DiT's update_ema (src/optim/ema.ts: buffers are copied)."""
    with torch.no_grad():
        ema_params = dict(ema_model.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].mul_(decay).add_(param, alpha=1 - decay)
        ema_buffers = dict(ema_model.named_buffers())
        for name, buffer in model.named_buffers():
            ema_buffers[name].copy_(buffer)


def align_step(batch, precision):
    """trainAlignment's step before discStart with lpipsWeight 0, in the reduced config of run.ts's
    align.step: VAE [64, 128] (2 layers per block) on 64x64 images, DINOv2-S/14 with depth 4 at 112 px
    (8x8 tokens, bilinearly resized to the 32x32 latent grid), the default loss weights (MSE 1, KL 1e-6
    on the mean over latent elements, patch and CLS 0.5 each on 1 - cosine), Adam (lr 5e-5, betas
    (0.5, 0.9)), EMA 0.9999 of the VAE and the heads."""
    vae_config = {**make_autoencoder_kl.config([64, 128], 32), "layers_per_block": 2}
    vae = make_autoencoder_kl.AutoencoderKL(vae_config).train().to(DEVICE)
    dino = make_dinov2.DinoVisionTransformer(img_size=518, patch_size=14, embed_dim=384, depth=4, num_heads=6,
                                             init_values=1.0, ffn_layer="mlp", interpolate_offset=0.1).eval().to(DEVICE)
    dino.requires_grad_(False)
    heads = AlignmentHeads(4, 384).train().to(DEVICE)
    model = torch.nn.ModuleDict({"vae": vae, "heads": heads})
    ema = torch.nn.ModuleDict({"vae": make_autoencoder_kl.AutoencoderKL(vae_config), "heads": AlignmentHeads(4, 384)}).eval().to(DEVICE)
    ema.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.5, 0.9), foreach=False)
    x = torch.rand(batch, 3, 64, 64, device=DEVICE) * 2 - 1
    mean = torch.tensor(IMAGENET_MEAN, device=DEVICE).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=DEVICE).view(1, 3, 1, 1)
    grid = 112 // 14

    def run(iterations):
        for _ in range(iterations):
            with torch.no_grad(), autocast(precision):
                features = dino.forward_features(F.interpolate(((x + 1) / 2 - mean) / std, size=112, mode="bicubic"))
                target_patch, target_cls = features["x_norm_patchtokens"].float(), features["x_norm_clstoken"].float()
            with autocast(precision):
                posterior = vae.encode(x)
            # The posterior in float32 from the encoder's moments, as src/data/latents.ts encodePosterior.
            posterior = type(posterior)(posterior.parameters.float())
            with autocast(precision):
                z = posterior.sample()
                xrec = vae.decode(z).float()
                rec = F.mse_loss(xrec, x)
                kl = posterior.kl().sum() / z.numel()
                token_map = target_patch.transpose(1, 2).reshape(batch, -1, grid, grid)
                target_patch = F.interpolate(token_map, size=z.shape[2:], mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
                patch, cls = heads(z)
                align = 0.5 * (1 - F.cosine_similarity(patch.float(), target_patch, dim=-1).mean()) \
                    + 0.5 * (1 - F.cosine_similarity(cls.float(), target_cls, dim=-1).mean())
                total = rec + 1e-6 * kl + align
            total.backward()
            total.item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_ema(ema, model, 0.9999)

    return run


def sit_train_step(config):
    """SiT's train.py step with the default transport (Linear path, velocity, no weighting):
    t ~ U[0, 1], x_t = t * x1 + (1 - t) * x0, u_t = x1 - x0, the MSE of model(x_t, t, y) against u_t
    (mean_flat, then the mean), AdamW (lr 1e-4, weight decay 0), EMA 0.9999."""
    return lambda batch, precision: sit_train_step_of(config, batch, precision)


def sit_train_step_of(config, batch, precision):
    model = sit(**config).train()
    ema = sit(**config)
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0, foreach=False)
    side = config.get("input_size", 32)
    x1 = torch.randn(batch, 4, side, side, device=DEVICE)
    y = torch.randint(0, config.get("num_classes", 1000), (batch,), device=DEVICE)

    def run(iterations):
        for _ in range(iterations):
            x0 = torch.randn_like(x1)
            t = torch.rand(batch).to(x1)
            t_x = t.view(-1, 1, 1, 1)
            xt = t_x * x1 + (1 - t_x) * x0
            ut = x1 - x0
            with autocast(precision):
                loss = ((model(xt, t, y).float() - ut) ** 2).mean(dim=list(range(1, x1.ndim))).mean()
            loss.backward()
            loss.item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_ema(ema, model, 0.9999)

    return run


def inception_forward(batch, precision):
    model = make_inception.FIDInceptionV3().eval().to(DEVICE)
    images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device=DEVICE)
    return inference(precision, lambda: model(images))


WORKLOADS = {
    "add": add_new,
    "add_": add_inplace,
    "matmul": matmul,
    "matmul.bf16": matmul_bf16,
    "conv2d.forward": conv2d_forward,
    "conv2d.forward+backward": conv2d_forward_backward,
    "mlp.step": mlp_step,
    "vae.encode": vae_encode,
    "vae.decode": vae_decode,
    "dinov2.forward": dinov2_forward,
    "sit.forward": sit_forward,
    "sit.sample": sit_sample(1),
    "sit.sample.cfg": sit_sample(4),
    "sit.sample.onnx": sit_sample(1),
    "align.step": align_step,
    "sit.train.step": sit_train_step(SIT_B2),
    "sit.tiny.train.step": sit_train_step(TINY_SIT),
    "sit.tiny.sample": sit_sample(2, TINY_SIT, steps=17),
    "inception.forward": inception_forward,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    device = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    ready = {"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas.group(1) if blas else "unknown",
             "device": device}
    print(json.dumps(ready), flush=True)
    runs = {}
    for line in sys.stdin:
        request = json.loads(line)
        item = request["item"]
        if item not in WORKLOADS:
            sys.exit(f"torch_eager.py: unknown item {item!r} (known: {', '.join(WORKLOADS)})")
        try:
            batch, precision = request.get("batch"), request.get("precision", "fp32")
            key = (item, precision)
            if key not in runs:
                runs[key] = WORKLOADS[item]() if batch is None else WORKLOADS[item](batch, precision)
            iterations = int(request["iterations"])
            start, cpu_start = time.perf_counter(), time.process_time()
            runs[key](iterations)
            if DEVICE.type == "cuda":
                torch.cuda.synchronize(DEVICE)
        except Exception as error:  # reported to bench/run.ts, which goes on with the next item
            print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
            continue
        seconds = (time.perf_counter() - start) / iterations
        cpu_seconds = (time.process_time() - cpu_start) / iterations
        print(json.dumps({"seconds": seconds, "cpuSeconds": cpu_seconds}), flush=True)


if __name__ == "__main__":
    main()
