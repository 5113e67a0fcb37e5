"""Every enumerated name the user can type, in one torch-free place: config, CLI and library import it.

The CLI answers ``--help`` without importing torch, so the choices it offers cannot come from the
modules that build networks or translate images; they come from here, and so do those modules'.
"""

from __future__ import annotations

# Generators and the multiple their input sides must be (the ResNets downsample twice, the U-Nets
# once per level).
GENERATOR_SIZE_MULTIPLES = {"resnet_9blocks": 4, "resnet_6blocks": 4, "unet_256": 256, "unet_128": 128}
GENERATOR_NAMES = tuple(GENERATOR_SIZE_MULTIPLES)
DISCRIMINATOR_NAMES = ("basic", "n_layers", "pixel")
BASIC_D_LAYERS = 3  # --netD basic: the 70x70 PatchGAN is the n_layers one with 3 layers
NORM_NAMES = ("instance", "batch", "none")
INIT_NAMES = ("normal", "xavier", "kaiming", "orthogonal")
UPSAMPLE_NAMES = ("transpose", "resize")
# --colour_transfer_start: none, each channel's histogram matched on its own, or the joint colour distribution
COLOUR_TRANSFER_STARTS = ("off", "channels", "joint")

GAN_MODES = ("lsgan", "vanilla", "wgangp")
LR_POLICIES = ("linear", "step", "plateau", "cosine")
BAD_IMAGE_POLICIES = ("skip", "fail")  # --on_bad_image
NONFINITE_POLICIES = ("stop", "skip")  # --on_nonfinite
PREPROCESS_NAMES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
CROPPING_PREPROCESS = ("resize_and_crop", "crop", "scale_width_and_crop")  # every training image is crop_size square

# What is trained: cycle_gan (two generators, two discriminators, unpaired data), pix2pix (one generator
# and one conditional discriminator, aligned pairs) or cut (one generator, one discriminator, unpaired data).
MODELS = ("cycle_gan", "pix2pix", "cut")
# The models the official code has a zoo of (datasets and pretrained generators).
ZOO_MODELS = ("cycle_gan", "pix2pix")
# The models whose one generator (g_ab) translates AtoB only.
ONE_WAY_MODELS = ("pix2pix", "cut")
# CUT's two settings (the official --CUT_mode): CUT adds the identity PatchNCE of G(b) against b; FastCUT
# drops it and weighs PatchNCE 10 times as much.
CUT_MODES = ("CUT", "FastCUT")
# The four trained networks (a checkpoint may add the generators' moving averages, ``<name>_ema``).
NETWORK_NAMES = ("g_ab", "g_ba", "d_a", "d_b")
# pix2pix trains G (stored as g_ab: it translates AtoB) and a conditional D (d_b: it judges B given A).
PIX2PIX_NETWORK_NAMES = ("g_ab", "d_b")
# CUT trains G (g_ab), D_Y (d_b) and the projection head of its PatchNCE loss (h_ab).
CUT_NETWORK_NAMES = ("g_ab", "d_b", "h_ab")
# A direction names the generator that translates it: AtoB is G_A (g_ab), BtoA is G_B (g_ba).
GENERATOR_FOR_DIRECTION = {"AtoB": "g_ab", "BtoA": "g_ba"}
DIRECTIONS = tuple(GENERATOR_FOR_DIRECTION)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

# Translation: tiles bound memory (a resnet_9blocks tile of 1024 px stays near 1 GiB in fp32).
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 64
TILE_STATS = ("exact", "estimate")
# Output file extensions and the Pillow format each is written in.
OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}

# Video: the containers read and written (FFmpeg's, through PyAV), and how instance norm meets time:
# frame = each frame's own statistics; smooth = a moving average over the frames so far; clip = the
# statistics of each shot (two passes).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
TEMPORAL_STATS = ("frame", "smooth", "clip")
DEFAULT_VIDEO_CODEC = "libx264"

EXPORT_FORMATS = ("onnx", "torchscript")
# Inference engines: auto = OpenVINO when installed, else PyTorch.
ENGINES = ("auto", "torch", "openvino", "onnxruntime")
TRANSLATE_PRECISIONS = ("fp32", "bf16")  # bf16 on the OpenVINO engine only


def other_direction(direction: str) -> str:
    """BtoA for AtoB and AtoB for BtoA: the generator that translates back."""
    return "BtoA" if direction == "AtoB" else "AtoB"
