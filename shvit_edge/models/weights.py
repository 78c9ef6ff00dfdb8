"""Trained-like weights for a freshly built model: what pipeline checks, benchmarks and tests export and verify
when no trained checkpoint exists.

A freshly initialised network barely reacts to its input: zero-initialised residual branches, unit BatchNorm
statistics and a small head leave nearly the same logits for every image (an fp16 Core ML export of untrained
EfficientViT-M2 returns the same values for all inputs, and verify rightly refuses it as an artifact that ignores
its input). :func:`trained_like` gives any family's model random fan-in scaled weights, random norm affines and
BatchNorm statistics measured on the kinds of image it will be checked on (:func:`calibration_inputs`), so its
outputs depend on the input the way a trained network's do and parity checks judge something.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: the scale of a residual branch's last norm relative to the others (see :func:`trained_like`)
BRANCH_GAIN = 0.1
#: the normalization most families evaluate with (pass a family's own ``preprocessing`` where it differs)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@torch.no_grad()
def trained_like(model: torch.nn.Module, seed: int = 0, resolution: int = 128,
                 branch_gain: float = BRANCH_GAIN, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> torch.nn.Module:
    """``model`` (changed in place, and returned in eval mode) with trained-like weights, so no residual branch
    is zero and fusion is really exercised.

    Every weight is random with fan-in scaling and every norm's affine is random (the last norm of each residual
    branch, which the model initialises at zero, ``branch_gain`` times smaller); BatchNorm running statistics
    are first measured on :func:`calibration_inputs` at ``resolution`` x ``resolution``, normalized by the
    family's ``mean`` and ``std`` (as training leaves them measured on its images, so activations stay bounded
    through the residual stack on what the model is shown) and then perturbed, so they never match a batch
    exactly."""
    gen = torch.Generator().manual_seed(seed)
    # the norms a model initialises at zero end its residual branches (the authors' zero-init); they get small
    # scales, as training leaves them. EfficientViT-M5 at 224, logits' largest change from rounding: with those
    # norms at full strength, 0.7 in float32 (1% of their range: chaotic, no parity check would mean anything);
    # at 0.3x, 0.54 in float16 (its Core ML fp16 probabilities were another function); at 0.1x, 0.04 (SHViT-S4's
    # is 0.02), its logits still spread 1.5 across random inputs
    branch_ends = {n.rsplit(".", 1)[0] for n, p in model.named_parameters()
                   if p.ndim == 1 and n.endswith("weight") and not p.is_meta and not p.any()}
    for name, p in model.named_parameters():
        gain = branch_gain if name.rsplit(".", 1)[0] in branch_ends else 1.0
        if p.ndim > 1:
            p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
        elif name.endswith("weight"):  # norm scales
            p.copy_(gain * (0.5 + torch.rand(p.shape, generator=gen)))
        else:
            p.copy_(gain * 0.1 * torch.randn(p.shape, generator=gen))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(2):
        model(calibration_inputs(8, resolution, gen, mean, std))
    for m in norms:
        m.momentum = 0.1
        m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape, generator=gen))
        m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=gen) * m.running_var.sqrt())
    return model.eval()


def calibration_inputs(count: int, resolution: int, gen: torch.Generator, mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``count`` images BatchNorm statistics are measured on, normalized by ``mean`` and ``std`` as the model's
    inputs are: half uniform random pixels (what ``verify``'s random inputs are), half :func:`natural_like`
    (what photos are). Measured on unit white noise instead (the earlier recipe), both were out of range:
    uniform pixels normalized are 1.28 times louder and offset, which made EfficientViT-M3's attention sharp
    (q·k logits' std up to 13.4 in a layer, 3.5 now) and its float16 Core ML export miss verify's cosine
    (0.9974; 0.99997 now), and the fixture photos drove EfficientViT-M0's logits to 77 (17 on noise) and its
    fp32 ONNX export past verify's 1e-3."""
    pixels = torch.cat([torch.rand(count - count // 2, 3, resolution, resolution, generator=gen),
                        natural_like(count // 2, resolution, gen)])
    mean_t = torch.tensor(list(mean), dtype=pixels.dtype)[None, :, None, None]
    std_t = torch.tensor(list(std), dtype=pixels.dtype)[None, :, None, None]
    return (pixels - mean_t) / std_t


def natural_like(count: int, resolution: int, gen: torch.Generator) -> torch.Tensor:
    """Random RGB images in [0, 1] with the statistics of photos a random network feels: an amplitude spectrum
    falling as 1/f (most energy at low spatial frequencies), colour channels sharing one luminance field, and
    each image's pixels around 0.45 with a spread of 0.22 (ImageNet's), clipped to the pixel range."""
    fy = torch.fft.fftfreq(resolution).abs()[:, None]
    fx = torch.fft.rfftfreq(resolution)[None, :]
    amplitude = 1 / (fx ** 2 + fy ** 2).sqrt().clamp(min=1 / resolution)
    shape = (count, 4, resolution, fx.shape[1])
    spectrum = torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)) * amplitude
    fields = torch.fft.irfft2(spectrum, s=(resolution, resolution))
    images = fields[:, :1] + 0.3 * fields[:, 1:]  # a shared luminance, a little colour per channel
    flat = images.flatten(1)
    unit = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(images)
    return (0.45 + 0.22 * unit).clamp(0, 1)
