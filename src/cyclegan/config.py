"""Every option of a run, as frozen dataclasses: the single source of truth.

The CLI flags, the config file keys and the run's saved ``config.json`` all come from the
fields below. Field names keep the official CycleGAN option names (``netG``, ``lambda_A``, ...)
so that commands and config files carry over from junyanz/pytorch-CycleGAN-and-pix2pix.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .names import (
    BAD_IMAGE_POLICIES, BASIC_D_LAYERS, COLOUR_TRANSFER_STARTS, CROPPING_PREPROCESS, DEVICES, DIRECTIONS,
    DISCRIMINATOR_NAMES, GAN_MODES, CUT_MODES, GENERATOR_NAMES, GENERATOR_SIZE_MULTIPLES, INIT_NAMES, LR_POLICIES,
    MEMORY_FORMATS, MODELS, NONFINITE_POLICIES, NORM_NAMES, PRECISIONS, PREPROCESS_NAMES, UPSAMPLE_NAMES,
)

CONFIG_VERSION = 1

# A recipe is a bundle of option values, applied beneath the options given explicitly. ``paper`` is
# the official math, unchanged; ``fast`` is the bundle measured to translate well in minutes
# (benchmarks/learning.py --curve; the README's "Recipes" section gives the figures and reasons).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": {
        "global_residual": True,  # starts as the identity: it scores the do-nothing PSNR at iteration 0
        "upsample": "resize",  # no checkerboard from transposed convolutions
        "norm_D": "none",  # discriminators that see absolute colour and brightness
        "lambda_identity": 0.0,  # the identity start already keeps colours; the loss only slows the change
        "lr_policy": "cosine",  # smooth, per-iteration decay to zero: short runs end settled
        "warmup_iters": 100,  # ramp the lr in, so the first updates of the untrained D do not throw G off the identity
        "ema_decay": 0.999,  # translate with the moving average of the generator weights
    },
}


# What --model pix2pix changes beneath the options given (and beneath the recipe's): the official
# pix2pix defaults (its train_options / pix2pix_model.modify_commandline_options).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cycle_gan": {},
    "pix2pix": {"netG": "unet_256", "norm": "batch", "no_dropout": False, "gan_mode": "vanilla", "lambda_L1": 100.0,
                "pool_size": 0, "lambda_identity": 0.0},
    # The official CUT defaults (taesungp/contrastive-unpaired-translation, cut_model.py and train_options).
    "cut": {"lambda_NCE": 1.0, "pool_size": 0, "lambda_identity": 0.0, "n_epochs": 200, "n_epochs_decay": 200},
}
# What --CUT_mode FastCUT changes beneath the options given (beneath the recipe's too), as the official one.
CUT_MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "CUT": {},
    "FastCUT": {"nce_idt": False, "lambda_NCE": 10.0, "flip_equivariance": True, "n_epochs": 150, "n_epochs_decay": 50},
}


def option(default: Any, help: str, *, choices: tuple | None = None):
    """A dataclass field carrying its CLI help and choices."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the two generators and two discriminators (pix2pix: one of each)."""

    model: str = option(
        "cycle_gan", "what is trained: cycle_gan = two generators and two discriminators on unpaired trainA/ and "
        "trainB/ (the paper); pix2pix = one generator and a conditional discriminator on aligned pairs (train/ of "
        "side-by-side A|B images, or trainA/ + trainB/ matched by file name), with the official pix2pix defaults "
        "beneath the options given: unet_256, batch norm, dropout, vanilla GAN, lambda_L1 100, no pool; cut = CUT (Park "
        "et al. 2020): one generator A -> B and one discriminator on unpaired data, tied by PatchNCE instead of a "
        "cycle, with the official CUT defaults beneath: lambda_NCE 1, identity PatchNCE, no pool, 200 + 200 epochs "
        "(--CUT_mode FastCUT for the faster variant)", choices=MODELS)
    input_nc: int = option(3, "channels of domain A images: 1 = grayscale, 3 = RGB, any other count for "
                           "multispectral or microscopy TIFFs (4 = RGB + near infrared, 2 = two stains)")
    output_nc: int = option(3, "channels of domain B images (as --input_nc)")
    netG: str = option("resnet_9blocks", "generator: resnet_9blocks (256 px), resnet_6blocks (128 px), "
                       "unet_256 / unet_128 (U-Net with skips, 8 / 7 stride-2 levels)", choices=GENERATOR_NAMES)
    netD: str = option("basic", "discriminator: basic = 70x70 PatchGAN; n_layers = PatchGAN with n_layers_D "
                       "stride-2 layers; pixel = 1x1 PixelGAN", choices=DISCRIMINATOR_NAMES)
    n_layers_D: int = option(3, "stride-2 conv layers of the discriminator when netD is n_layers")
    num_D: int = option(1, "scales the discriminators judge (pix2pixHD's multi-scale critic): each scale is one more "
                        "discriminator of --netD that sees the image average-pooled by 2 once more; 1 = the paper")
    ngf: int = option(64, "filters in the generator's first conv layer")
    ndf: int = option(64, "filters in the discriminator's first conv layer")
    norm: str = option("instance", "normalisation layer", choices=NORM_NAMES)
    norm_D: str = option(
        "same",
        "normalisation in the discriminators: same = --norm; none lets them see absolute colour and "
        "brightness, which instance norm hides (fast recipe)",
        choices=("same",) + NORM_NAMES,
    )
    no_dropout: bool = option(True, "no dropout in the generator (the CycleGAN default)")
    init_type: str = option("normal", "weight initialisation", choices=INIT_NAMES)
    init_gain: float = option(0.02, "scale of the initialisation")
    upsample: str = option(
        "transpose",
        "generator upsampling: transpose = ConvTranspose2d as in the paper; resize = nearest "
        "upsampling + conv, which avoids checkerboard artifacts",
        choices=UPSAMPLE_NAMES,
    )
    global_residual: bool = option(
        False,
        "generator outputs clamp(input + residual) with the last conv zero-initialised, so it "
        "starts as the identity and learns only the change (fast recipe; needs input_nc == output_nc)",
    )
    colour_path: int = option(
        0,
        "hidden channels of a per-pixel colour branch (1x1 convs, no normalisation) added to the global "
        "residual: one tone and colour curve for every image, which the instance-normalised trunk cannot "
        "express (0 = none; needs --global_residual; not in the fast recipe, see README: Recipes)",
    )
    colour_transfer_start: str = option(
        "off",
        "add the global residual to a learnt cubic colour map of the input, started at an unpaired colour "
        "transfer between the training domains (fitted before the first step) instead of the identity: "
        "channels = each channel's histogram matched to the other domain's (a tone curve per channel); "
        "joint = the distribution transfer of Pitie et al. over the whole colour space (needs "
        "--global_residual; not in the fast recipe, see README: Recipes)",
        choices=COLOUR_TRANSFER_STARTS,
    )

    def generator_channels(self, direction: str) -> tuple[int, int]:
        """(in, out) channels of the generator that translates ``direction``: G_A maps input_nc to output_nc."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
        return (self.input_nc, self.output_nc) if direction == "AtoB" else (self.output_nc, self.input_nc)


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are prepared."""

    dataroot: str = option("", "dataset folder holding trainA/ and trainB/ (testA/, testB/)")
    direction: str = option("AtoB", "AtoB trains G_A on trainA -> trainB; BtoA swaps A and B", choices=DIRECTIONS)
    preprocess: str = option(
        "resize_and_crop",
        "resize_and_crop: bicubic resize to load_size square, random crop_size crop; "
        "crop: random crop only; scale_width: width to load_size, aspect kept (at least crop_size tall); "
        "scale_width_and_crop: that, then a random crop_size crop; none: keep the image (each side resized "
        "to its nearest multiple of 4, as the official code does)",
        choices=PREPROCESS_NAMES,
    )
    load_size: int = option(286, "images are resized to this square size")
    crop_size: int = option(256, "then randomly cropped to this size")
    no_flip: bool = option(False, "do not flip images horizontally at random")
    serial_batches: bool = option(False, "take A in order and B in order instead of shuffled / at random")
    max_dataset_size: int = option(0, "use at most this many images per domain (0 = all)")
    num_threads: int = option(-1, "data loading worker processes: -1 = auto (the official 4, but no more than "
                                  "the CPU cores at hand), 0 = load in the main process")
    on_bad_image: str = option(
        "skip", "images that do not decode (truncated, empty, not an image, a decompression bomb) or are smaller "
        "than crop_size with --preprocess crop: skip = leave them out, list them in RUN/bad_images.txt and say how "
        "many; fail = stop before training, naming the first", choices=BAD_IMAGE_POLICIES)


@dataclass(frozen=True)
class TrainConfig:
    """Losses, optimisation and the training loop."""

    recipe: str = option("paper", "a bundle of defaults, beneath the options given: paper = the official recipe, "
                         "unchanged; fast = global residual, resize upsampling, discriminators without norm, no "
                         "identity loss, warm-up + cosine lr, generator EMA (README: Recipes)", choices=tuple(RECIPES))
    gan_mode: str = option("lsgan", "GAN objective: lsgan = least squares (paper), vanilla = cross-entropy, wgangp = "
                           "Wasserstein with gradient penalty (lambda_gp)", choices=GAN_MODES)
    lambda_A: float = option(10.0, "weight of the cycle loss A -> B -> A")
    lambda_B: float = option(10.0, "weight of the cycle loss B -> A -> B")
    cycle_beta: float = option(
        0.0, "0 = the cycle loss is L1 (the paper); > 0 = smooth L1 with this beta (on the [-1, 1] scale): an error "
             "below beta is pulled in proportion to its size, so small cycle errors no longer hold both generators "
             "at the identity with the full weight; larger errors are pulled as by the L1")
    cycle_beta_decay: float = option(
        0.0, "the share of the schedule (0-1) over which cycle_beta falls linearly to 0, the L1 (0 = constant): smooth "
             "early, while both generators leave the identity, and the L1's hold on small errors once they have")
    cycle_beta_blur: int = option(
        0, "with --cycle_beta: N > 0 makes only the cycle error's local mean over N x N pixels (its tone) smooth L1, "
           "and the rest of it (the detail) L1 as in the paper; 0 = all of the error smooth")
    lambda_identity: float = option(0.5, "weight of the identity loss, relative to lambda_A / lambda_B (0 = off)")
    lambda_colour: float = option(
        0.0, "weight of the colour-moment loss: the mean and covariance of the colours of the generated images "
        "(this batch with the history pool) are pulled to those of the target domain's training images. It "
        "corrects the GAN's slow, biased drift on tone and colour, but also learns any colour difference between "
        "the two domains' content; 0 = off (the paper and the fast recipe; the demo uses 3)")
    lambda_residual: float = option(
        0.0, "with --global_residual: weight of an L1 loss on what each generator's residual changes, |G(x) - base(x)|, "
             "where the base is the input or the colour map that --colour_transfer_start fits. It holds a good start "
             "where the adversarial gradient has no direction, and gives way where the critic finds a difference; "
             "0 = off (the paper and the fast recipe)")
    lambda_L1: float = option(100.0, "pix2pix: weight of the L1 loss between G(A) and its partner B")
    lambda_NCE: float = option(
        0.0, "CUT's PatchNCE (Park et al. 2020) beside the cycle loss: each generator's encoder features of its "
             "translation must match those of its input patch for patch (contrastive, 256 patches per layer, 5 layers, "
             "a projection head trained with the generators); 0 = off (the paper); CUT uses 1, FastCUT 10; ResNet "
             "generators only")
    num_patches: int = option(256, "PatchNCE: patches sampled per layer and image (the official --num_patches)")
    nce_T: float = option(0.07, "PatchNCE: the temperature of its softmax (the official --nce_T)")
    CUT_mode: str = option("CUT", "cut: CUT, or FastCUT = no identity PatchNCE, lambda_NCE 10, flip equivariance, "
                           "150 + 50 epochs, beneath the options given (the official --CUT_mode)", choices=CUT_MODES)
    nce_idt: bool = option(True, "cut: also the PatchNCE of G(b) against b, an identity term that keeps G from "
                           "changing what is already in domain B; the two PatchNCE terms are averaged (the "
                           "official --nce_idt)")
    flip_equivariance: bool = option(False, "cut: translate a horizontally flipped batch half of the time and compare "
                                     "its PatchNCE features flipped back, so that G(flip(a)) = flip(G(a)) is learnt "
                                     "(FastCUT's; the official --flip_equivariance)")
    lambda_paired: float = option(
        0.0, "cycle_gan: weight of an L1 loss on the training images of A whose partner is known (a file of the same "
        "name in trainB/): lambda_paired (|G(a) - b| + |F(b) - a|), on those images only; semi-supervised training "
        "with a few pairs (0 = off, the paper)")
    lambda_gp: float = option(10.0, "wgangp: weight of the gradient penalty, applied to both discriminators "
                                    "(the official code defines it but never calls it)")
    pool_size: int = option(50, "generated images kept in each discriminator's history pool (0 = none)")
    lr: float = option(0.0002, "initial Adam learning rate")
    beta1: float = option(0.5, "Adam beta1 (beta2 is 0.999)")
    lr_policy: str = option(
        "linear",
        "linear: constant for n_epochs, then linearly to zero over n_epochs_decay; step: x0.1 every lr_decay_iters "
        "epochs; plateau: x0.2 once the epoch's mean cycle loss (cycle_A + cycle_B) has not improved by 1%% for 5 "
        "epochs; cosine: half a cosine down to zero over n_epochs + n_epochs_decay, updated every iteration", choices=LR_POLICIES)
    warmup_iters: int = option(0, "raise the lr linearly from 0 over this many first iterations (0 = none, the paper)")
    lambda_identity_decay_iters: int = option(
        0, "lower the identity-loss weight linearly from lambda_identity to 0 over this many iterations (0 = constant, "
           "the paper): colours are held early, and the generator is free to change them later")
    lambda_colour_decay_iters: int = option(
        0, "lower the colour-moment weight linearly from lambda_colour to 0 over this many iterations (0 = constant): "
           "the colour loss sets the tone early, then the GAN alone refines it, so a colour difference between the "
           "two domains' content is not learnt to the end")
    colour_map_lr: float = option(
        1.0, "the learning rate of the colour map that --colour_transfer_start fits, as a multiple of --lr (1 = the "
             "same; 0 = keep the fitted transfer and train only the residual on top of it)")
    lambda_cycle_start: float = option(
        1.0, "the cycle weights at the start of the run, as a share of lambda_A and lambda_B; they rise linearly to "
             "all of them over the first --lambda_cycle_ramp of the schedule (1 = constant, the paper): a low weight "
             "early lets both generators leave the identity for a global tone, the full weight later holds the content")
    lambda_cycle_ramp: float = option(
        0.0, "the share of the schedule (0-1) over which the cycle weights rise from lambda_cycle_start to lambda_A "
             "and lambda_B (0 = no ramp)")
    ema_decay: float = option(
        0.0, "keep an exponential moving average of the generator weights (decay per iteration, e.g. 0.999; warmed up "
             "as min(decay, (1 + n) / (10 + n)) at iteration n) and translate, test and evaluate with it; 0 = off (the paper)")
    lr_decay_iters: int = option(50, "step policy: multiply the lr by 0.1 every this many epochs (the official name; it counts epochs)")
    n_epochs: int = option(100, "epochs at the initial learning rate")
    n_epochs_decay: int = option(100, "epochs over which the learning rate decays linearly to zero")
    batch_size: int = option(1, "images per batch in each domain")
    max_iters: int = option(0, "stop after this many iterations in total, saving a resumable checkpoint (0 = no limit)")
    time_budget: str = option(
        "", "train for this much wall-clock time, e.g. 90s, 10m, 2h: the iteration rate is measured over the first "
            "iterations, the run's length in iterations fixed from it (budget_iters, kept in config.json, so a resumed "
            "run ends where an uninterrupted one would), and the lr schedule stretched or squeezed to end there; the "
            "rate is timed again at a quarter, half and three quarters of the budget and the rest of the schedule refitted")
    budget_iters: int = option(0, "the length in iterations that --time_budget fixed (set by the run; 0 = not yet)")
    budget_from_iter: int = option(0, "the iteration at which --time_budget last refitted the length (set by the run)")
    budget_from_progress: float = option(
        0.0, "the share of the schedule done at budget_from_iter: the rest is spread over the iterations up to "
             "budget_iters, so that a refitted length never makes the lr jump (set by the run)")
    budget_constant_share: float = option(
        0.0, "the share of the schedule at the initial lr, n_epochs / (n_epochs + n_epochs_decay) as configured: "
             "--time_budget splits the epochs of every length it fits by it (set by the run)")
    save_epoch_freq: int = option(5, "keep the generator and discriminator weights every this many epochs")
    save_latest_freq: int = option(5000, "save the resumable latest checkpoint every this many iterations (also at every epoch end)")
    print_freq: int = option(100, "write the losses to metrics.jsonl every this many iterations")
    display_freq: int = option(400, "save a sample image grid every this many iterations")
    tensorboard: bool = option(False, "also write the losses and sample grids for TensorBoard, in RUN/tensorboard "
                                      "(needs: pip install 'cyclegan[tensorboard]'); replaces the official visdom "
                                      "--display_id (RUN/index.html is always written)")
    seed: int = option(0, "seed of every random number generator")
    device: str = option("auto", "where to train: auto = cuda when available, else cpu; replaces the official --gpu_ids",
                         choices=DEVICES)
    eval_freq: int = option(0, "evaluate on the test split every this many epochs (0 = never): cycle L1, the colour "
                               "distance to the target domain's test images, PSNR/SSIM against eval_truth, and FID/KID "
                               "when the Inception weights are at hand")
    eval_truth: str = option("", "ground truth for the AtoB test images (files named like them), for --eval_freq")
    keep_best: str = option("", "keep RUN/best.safetensors by this evaluation number, e.g. AtoB_fid, AtoB_colour_swd_255, "
                                "BtoA_cycle_l1_255, AtoB_psnr_db (PSNR and SSIM: higher is better; the rest: lower)")
    on_nonfinite: str = option(
        "stop", "when a loss becomes NaN or infinite: stop = stop at once, leaving RUN/latest.safetensors as the last "
        "good checkpoint; skip = skip that update and go on", choices=NONFINITE_POLICIES)
    precision: str = option(
        "fp32", "fp32 (the paper recipe: the official math); bf16 or fp16 autocast (fp16 with a gradient scaler, CUDA "
        "only); auto = bf16 where it trains faster (a CPU with amx_bf16, or a CUDA device with bf16; avx512_bf16 "
        "alone measured slower than fp32), else fp32, and the start-up log says which. bf16 is refused on a CPU without native bf16, where it "
        "is emulated and slower, unless --allow_emulated_precision", choices=PRECISIONS)
    allow_emulated_precision: bool = option(False, "let --precision bf16 run on a CPU that only emulates it")
    memory_format: str = option(
        "auto", "tensor layout of the networks: auto = channels_last on CUDA, contiguous on CPU (channels_last "
        "measured 0.85x on an AVX2 CPU); channels_last; contiguous", choices=MEMORY_FORMATS)
    compile: bool = option(False, "torch.compile the four networks (compile time is reported separately; "
                                  "measured 0.90x on an AVX2 CPU, so off by default)")
    fused_adam: bool = option(True, "the fused Adam kernel (the same update as the official for-loop Adam)")


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: its name and folder, and the three parts above."""

    name: str = "experiment_name"
    checkpoints_dir: str = "./checkpoints"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Rebuild from ``to_dict`` output (nested) or from flat official option names.

        The recipe's bundle is not applied again: a saved config holds every value it resolved, and an
        option it lacks came after it was saved, so it takes the default (off), as the run trained.
        """
        return build_experiment(flatten_config_dict(data), base=cls())

    def option(self, key: str) -> Any:
        """The value of one flat official-named option."""
        section = section_of(key)
        return getattr(getattr(self, section) if section else self, key)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
TOP_LEVEL_KEYS = ("name", "checkpoints_dir")


def section_of(key: str) -> str:
    """The section ('model', 'data', 'train') that owns a flat option name."""
    for section, cls in SECTIONS.items():
        if key in {f.name for f in dataclasses.fields(cls)}:
            return section
    if key in TOP_LEVEL_KEYS:
        return ""
    raise ValueError(f"unknown option {key!r}; valid options: {', '.join(sorted(all_option_names()))}")


def all_option_names() -> list[str]:
    names = list(TOP_LEVEL_KEYS)
    for cls in SECTIONS.values():
        names += [f.name for f in dataclasses.fields(cls)]
    return names


def flatten_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Accept ``{"model": {...}, "train": {...}}`` or flat keys; return flat keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "version":
            continue
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def build_experiment(flat: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Apply flat official-named options on top of ``base`` (defaults when None), checking each."""
    if base is None:
        recipe = flat.get("recipe", ExperimentConfig().train.recipe)
        if recipe not in RECIPES:
            raise ValueError(f"option 'recipe' must be one of {', '.join(RECIPES)}; got {recipe!r}")
        model = flat.get("model", ModelConfig().model)
        if model not in MODEL_DEFAULTS:
            raise ValueError(f"option 'model' must be one of {', '.join(MODEL_DEFAULTS)}; got {model!r}")
        mode = flat.get("CUT_mode", ExperimentConfig().train.CUT_mode) if model == "cut" else "CUT"
        if mode not in CUT_MODE_DEFAULTS:
            raise ValueError(f"option 'CUT_mode' must be one of {', '.join(CUT_MODE_DEFAULTS)}; got {mode!r}")
        flat = {**MODEL_DEFAULTS[model], **CUT_MODE_DEFAULTS[mode], **RECIPES[recipe], **flat}
    base = base or ExperimentConfig()
    parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in flat.items():
        section = section_of(key)
        if section:
            parts[section][key] = value
        else:
            top[key] = value
    sections = {
        name: dataclasses.replace(getattr(base, name), **_coerce(SECTIONS[name], values))
        for name, values in parts.items()
    }
    config = dataclasses.replace(base, **top, **sections)
    validate(config)
    return config


TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Convert config-file values to each field's type and check its choices."""
    types = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        f = types[key]
        kind = type(f.default)
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"option {key!r} must be true or false, got {value!r}")
        if kind is int and isinstance(value, float) and not value.is_integer():
            value = str(value)  # refused below instead of being truncated
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {key!r} must be {TYPE_WORDS[kind]}, got {value!r}") from None
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"option {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
        out[key] = value
    return out


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``10m``, ``1.5h`` (a bare number is seconds); a clear error otherwise."""
    spec = str(text).strip().lower()
    number, unit = (spec[:-1], spec[-1]) if spec[-1:] in DURATION_UNITS else (spec, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise ValueError(f"--time_budget {text!r}: expected a duration such as 90s, 10m or 2h") from None
    if not seconds > 0:
        raise ValueError(f"--time_budget {text!r} must be positive")
    return seconds


def smallest_patch_input(n_layers: int) -> int:
    """The smallest input side for which an ``n_layers`` PatchGAN still outputs one logit.

    Its n_layers stride-2 convs halve the side, and its two stride-1 convs take 1 pixel each.
    """
    return 3 * 2**n_layers


def check_discriminator_scales(m: ModelConfig, d: DataConfig) -> None:
    """The coarsest of --num_D scales must still be large enough for the PatchGAN to judge."""
    if m.num_D == 1 or m.netD == "pixel" or d.preprocess not in CROPPING_PREPROCESS:
        return
    n_layers = BASIC_D_LAYERS if m.netD == "basic" else m.n_layers_D
    coarsest = -(-d.crop_size // 2 ** (m.num_D - 1))
    if coarsest < smallest_patch_input(n_layers):
        raise ValueError(f"--num_D {m.num_D}: the coarsest scale of a {d.crop_size} px crop is {coarsest} px, smaller "
                         f"than the {smallest_patch_input(n_layers)} px a {n_layers}-layer PatchGAN needs; "
                         f"lower --num_D or raise --crop_size")


def validate(config: ExperimentConfig) -> None:
    """Reject option combinations that would otherwise fail deep inside a run."""
    m, d, t = config.model, config.data, config.train
    if t.time_budget:
        parse_duration(t.time_budget)
    if t.lambda_NCE < 0 or t.num_patches < 1 or t.nce_T <= 0:
        raise ValueError(f"--lambda_NCE must be 0 or more, --num_patches at least 1 and --nce_T positive, got "
                         f"{t.lambda_NCE}, {t.num_patches}, {t.nce_T}")
    if t.lambda_NCE > 0 and not m.netG.startswith("resnet"):
        raise ValueError(f"--lambda_NCE compares the encoder features of a ResNet generator, not of --netG {m.netG}")
    shares = (t.budget_from_progress, t.budget_constant_share)
    if t.budget_iters < 0 or t.budget_from_iter < 0 or not all(0.0 <= share <= 1.0 for share in shares):
        raise ValueError(f"budget_iters and budget_from_iter must be 0 or more, budget_from_progress and "
                         f"budget_constant_share in [0, 1]; got {t.budget_iters}, {t.budget_from_iter}, {shares}")
    positive = {"ngf": m.ngf, "ndf": m.ndf, "crop_size": d.crop_size, "load_size": d.load_size,
                "batch_size": t.batch_size, "print_freq": t.print_freq, "display_freq": t.display_freq,
                "save_epoch_freq": t.save_epoch_freq, "save_latest_freq": t.save_latest_freq,
                "n_layers_D": m.n_layers_D, "num_D": m.num_D}
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"option {key!r} must be at least 1, got {value}")
    if d.num_threads < -1:
        raise ValueError(f"option 'num_threads' must be -1 (auto), 0 or more, got {d.num_threads}")
    non_negative = {"pool_size": t.pool_size, "max_iters": t.max_iters,
                    "max_dataset_size": d.max_dataset_size, "n_epochs": t.n_epochs,
                    "n_epochs_decay": t.n_epochs_decay, "lambda_identity": t.lambda_identity,
                    "warmup_iters": t.warmup_iters, "lambda_identity_decay_iters": t.lambda_identity_decay_iters,
                    "lambda_colour_decay_iters": t.lambda_colour_decay_iters, "lambda_cycle_start": t.lambda_cycle_start,
                    "cycle_beta": t.cycle_beta, "cycle_beta_blur": t.cycle_beta_blur}
    for key, value in non_negative.items():
        if value < 0:
            raise ValueError(f"option {key!r} must not be negative, got {value}")
    if t.cycle_beta_blur and not t.cycle_beta:
        raise ValueError("--cycle_beta_blur splits the smooth cycle loss of --cycle_beta: give --cycle_beta too")
    if t.cycle_beta_blur > d.crop_size:
        raise ValueError(f"--cycle_beta_blur {t.cycle_beta_blur} is a window of pixels: at most --crop_size "
                         f"({d.crop_size})")
    for key in ("lambda_cycle_ramp", "cycle_beta_decay"):
        if not 0 <= getattr(t, key) <= 1:
            raise ValueError(f"option {key!r} is a share of the schedule, in [0, 1]; got {getattr(t, key)}")
    if not 0 <= t.ema_decay < 1:
        raise ValueError(f"option 'ema_decay' must be in [0, 1), got {t.ema_decay}")
    if t.n_epochs + t.n_epochs_decay < 1:
        raise ValueError("n_epochs + n_epochs_decay must be at least 1")
    if d.preprocess == "resize_and_crop" and d.crop_size > d.load_size:
        raise ValueError(f"crop_size ({d.crop_size}) is larger than load_size ({d.load_size}): "
                         "the random crop cannot fit; lower --crop_size or raise --load_size")
    if d.preprocess in ("none", "scale_width") and t.batch_size > 1:
        raise ValueError(f"--preprocess {d.preprocess} keeps each image's own aspect ratio, so images cannot share "
                         "a batch: use --batch_size 1 or a preprocess that crops")
    if d.preprocess == "scale_width_and_crop" and d.crop_size > d.load_size:
        raise ValueError(f"crop_size ({d.crop_size}) is wider than load_size ({d.load_size}), the width "
                         "scale_width gives every image; lower --crop_size or raise --load_size")
    stride = GENERATOR_SIZE_MULTIPLES.get(m.netG, 1)
    if d.preprocess in CROPPING_PREPROCESS and d.crop_size % stride:
        raise ValueError(f"--crop_size {d.crop_size} is not a multiple of {stride}, the size {m.netG} needs "
                         f"(its output would not match its input); use e.g. --crop_size {max(stride, d.crop_size // stride * stride)}")
    if m.netG.startswith("unet") and (m.global_residual or m.upsample != "transpose" or m.colour_path
                                      or m.colour_transfer_start != "off"):
        raise ValueError(f"--netG {m.netG} has no --global_residual, --upsample resize, --colour_path or "
                         f"--colour_transfer_start (--recipe fast "
                         f"sets the first two): pass --netG resnet_9blocks or resnet_6blocks, or --no-global_residual "
                         f"--upsample transpose")
    check_discriminator_scales(m, d)
    for flag, count in (("--input_nc", m.input_nc), ("--output_nc", m.output_nc)):
        if count < 1:
            raise ValueError(f"{flag} must be a positive number of channels, got {count}")
    if m.global_residual and m.input_nc != m.output_nc:
        raise ValueError("global_residual needs input_nc == output_nc")
    if m.colour_path and not m.global_residual:
        raise ValueError("--colour_path adds to the global residual: it needs --global_residual")
    if m.colour_transfer_start != "off" and not m.global_residual:
        raise ValueError("--colour_transfer_start starts the global residual's colour map: it needs --global_residual")
    if t.lambda_residual > 0 and not m.global_residual:
        raise ValueError("--lambda_residual weighs the global residual: it needs --global_residual")
    if t.colour_map_lr < 0:
        raise ValueError(f"--colour_map_lr must not be negative, got {t.colour_map_lr}")
    if t.colour_map_lr != 1 and m.colour_transfer_start == "off":
        raise ValueError("--colour_map_lr sets the learning rate of the colour map that --colour_transfer_start "
                         "fits: add --colour_transfer_start channels or joint")
    if m.colour_path < 0:
        raise ValueError(f"--colour_path must be 0 (none) or a positive number of channels, got {m.colour_path}")
    if t.lambda_identity > 0 and m.input_nc != m.output_nc:
        raise ValueError("the identity loss needs input_nc == output_nc; set --lambda_identity 0")
    validate_model(config)
    if not config.name or "/" in config.name or config.name in (".", ".."):
        raise ValueError(f"--name must be a plain folder name, got {config.name!r}")


def validate_model(config: ExperimentConfig) -> None:
    """The options that only one --model has."""
    t = config.train
    for key in ("lambda_L1", "lambda_paired", "lambda_residual"):
        if getattr(t, key) < 0:
            raise ValueError(f"option {key!r} must not be negative, got {getattr(t, key)}")
    model = config.model.model
    if model != "cut" and (t.CUT_mode != "CUT" or not t.nce_idt or t.flip_equivariance):
        raise ValueError(f"--CUT_mode, --nce_idt and --flip_equivariance are options of --model cut, not of "
                         f"--model {model}")
    if model == "cycle_gan":
        return
    if model == "pix2pix" and config.model.colour_transfer_start != "off":
        raise ValueError("--model pix2pix has no --colour_transfer_start: it learns the colours from the pairs "
                         "(an unpaired colour transfer is for --model cycle_gan or cut)")
    cycle_only = {"lambda_identity": t.lambda_identity, "lambda_colour": t.lambda_colour, "lambda_paired": t.lambda_paired,
                  "cycle_beta": t.cycle_beta, "lambda_residual": t.lambda_residual}
    if model == "pix2pix":
        cycle_only["lambda_NCE"] = t.lambda_NCE
    given = [key for key, value in cycle_only.items() if value > 0]
    if given:
        teacher = "learns from the pairs through lambda_L1" if model == "pix2pix" else "ties G(a) to a through lambda_NCE"
        raise ValueError(f"--model {model} has no {', '.join(given)} (CycleGAN losses: {model} {teacher}); set "
                         f"{' and '.join(f'--{k} 0' for k in given)}")
    if model == "cut" and t.lambda_NCE <= 0:
        raise ValueError("--model cut needs --lambda_NCE above 0: PatchNCE is what ties its translation to the input")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into flat official option names."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    data = _parse_config_text(path, text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of options, not {type(data).__name__}")
    flat = flatten_config_dict(data)
    for key in flat:
        try:
            section_of(key)
        except ValueError as exc:
            raise ValueError(f"config file {path}: {exc}") from None
    return flat


def _parse_config_text(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"config file {path}: unknown format {suffix!r}; use .toml, .yaml, .yml or .json")
    try:
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text) or {}
    except Exception as exc:  # the parse errors of three libraries
        raise ValueError(f"config file {path} cannot be parsed: {exc}") from None
