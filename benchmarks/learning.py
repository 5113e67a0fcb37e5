"""The number to watch when anything in training changes: held-out ground-truth PSNR and SSIM.

Two modes.

One run (default): trains the demo's fast recipe on the demo task (photo -> "winter look", built from
the photos inside scikit-image) for a fixed number of iterations, then scores G_A's translations of
the held-out crops against their true winter look, next to doing nothing (the input itself):

    python benchmarks/learning.py                   # 600 iterations, about 2-3 minutes on 2 cores
    python benchmarks/learning.py --iters 1944      # the whole demo (8 epochs)
    python benchmarks/learning.py --option lr=0.0004
    python benchmarks/learning.py --iters 1944 --tasks etching --option lambda_colour=0

Learning curves (--curve): for every task and recipe, trains for up to --minutes of wall-clock time
and scores the held-out crops at fixed moments of training time (the scoring itself is not
counted, by the curve's clock nor by the run's --time_budget). Also computed: doing nothing, the
ceiling of the best per-pixel colour mapping fitted to the ground truth itself, the unpaired colour
transfer (trainA's colours matched to trainB's), the truth in B's colours (T(a) recoloured so that T(trainA) takes trainB's colour distribution: what an
otherwise perfect learner that matches domain B scores) and the checkerboard test (the spectrum's peak
at the upsampling strides, 2 and 4 pixels) of the final translations. Each point also records what an
unpaired user has without the truth: the held-out cycle L1 and the colour distance of G(testA) to testB;
a third table gives the PSNR of the point each of them would keep (--keep_best), beside the end and the
hindsight peak. Writes curves.png, curves.json and Markdown tables:

    python benchmarks/learning.py --curve                                  # both tasks, paper and fast, 10 min each
    python benchmarks/learning.py --curve --tasks etching --recipes fast --minutes 3
    python benchmarks/learning.py --curve --tasks winter --recipes fast --shared_content   # B = T(A's own crops)
    python benchmarks/learning.py --curve --recipes pix2pix pix2pix_fast fast_paired --reuse benchmarks/results/learning/curves.json

What pairs buy: the pairs are known on these tasks (a crop of A and its true look T(a)), so the
pix2pix rows train on all of them (trainA and trainB = T(trainA), matched by name), and fast_paired
trains the fast recipe with --lambda_paired 10 on PAIRED_FRACTION of them (their T(a) added to
trainB under the same names, beside B's own crops); fast_paired_data trains the fast recipe on that
same data without the paired loss. All are scored on the same held-out crops.

--reuse FILE keeps the curves of the recipes not run now from an earlier curves.json (the same data
and machine): after a change to the fast recipe, `--recipes fast --reuse benchmarks/results/learning/curves.json`
redoes only its curves and keeps the paper's.

--shared_content asks what the data allow: trainB becomes the transform of trainA's own crops (still
unpaired: the pairing of A and B images stays random), so both domains show the same content. It works
in the one-run mode too; there --data also keeps the run (DATA/TASK/runs/learning) for a look afterwards.

--size 128 builds every task at twice the crop size (144-px training crops, 128-px held-out ones), from
photos and scenes scaled by two, in a data folder of its own (TASK/data_128px), and trains on 128-px crops;
the networks stay as each recipe has them.

--from_json FILE --data DATA redraws the table and plot of FILE with the references recomputed from
the tasks' data under DATA (as an earlier --curve --data DATA left it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from cyclegan.checkpoint import load_generator  # noqa: E402
from cyclegan.colour_transfer import distribution_transfer  # noqa: E402
from cyclegan.config import build_experiment  # noqa: E402
from cyclegan.demo import DATA_MARKER, DEMO_OPTIONS, TASKS as DEMO_TASKS, build_demo_dataset, translate_test_crops  # noqa: E402
from cyclegan.images import find_images, load_image, to_tensor  # noqa: E402
from cyclegan.metrics import colour_sample, colour_swd_255, l1_255, psnr, ssim  # noqa: E402
from cyclegan.run import fit, make_dataset  # noqa: E402
from cyclegan.training import Trainer  # noqa: E402

from analysis import ETCHING, colour_mapping_ceiling, periodic_peak  # noqa: E402
from machine import describe_machine  # noqa: E402
from tasks import NEW_TASKS, SCENE_COUNT, with_scenes  # noqa: E402

TASKS = {**DEMO_TASKS, ETCHING.name: ETCHING, **NEW_TASKS}

AT_64_PX = {"load_size": 72, "crop_size": 64, "num_threads": 0, "print_freq": 20, "display_freq": 100000,
            "save_latest_freq": 100000, "save_epoch_freq": 1000}
# What each curve trains. "paper" is the official recipe with the paper's 64-128 px generator; its
# lr stays constant through the first 100 epochs, i.e. through the whole curve.
FAST = {**DEMO_OPTIONS, "lambda_colour": 0.0, **AT_64_PX}  # the recipe alone, with the demo's sizes
# pix2pix with the fast rows' networks (resnet_6blocks ngf 16, ndf 32, instance norm: the curves score in
# eval mode, where batch norm would use running statistics); its iterations cost about half of CycleGAN's,
# so the fast bundle gets twice the epochs to fill the same time.
PIX2PIX_NETWORKS = {"model": "pix2pix", "netG": "resnet_6blocks", "ngf": 16, "ndf": 32, "norm": "instance"}
CURVE_RUNS = {
    "paper": {"recipe": "paper", "netG": "resnet_6blocks", **AT_64_PX},
    "fast": FAST,
    "fast_colour": {**DEMO_OPTIONS, **AT_64_PX},  # what make demo trains: fast + --lambda_colour 3
    "pix2pix": {**PIX2PIX_NETWORKS, **AT_64_PX},  # the official pix2pix objective and schedule
    "pix2pix_fast": {**FAST, **PIX2PIX_NETWORKS, "n_epochs": 8, "n_epochs_decay": 8},
    "fast_paired": {**FAST, "lambda_paired": 10.0},
    "fast_paired_data": FAST,  # fast_paired's data without its loss: what the T(a) images in trainB give alone
    "fast_nce": {**FAST, "lambda_NCE": 1.0},  # CUT's PatchNCE as an extra term (CUT's weight)
    "fast_msd": {**FAST, "num_D": 2},  # pix2pixHD's multi-scale critic: the 70x70 PatchGAN at 64 and 32 px
    "fast_colour1": {**FAST, "lambda_colour": 1.0},  # a third of the demo's colour weight
    # Both generators start as the unpaired colour transfer between the domains (a learnt cubic colour map under the
    # global residual), not as the identity: on a global tone the recipes stopped a fraction of the way to the truth,
    # while the transfer alone came within 1 dB of the data's bound.
    "fast_transfer": {**FAST, "colour_transfer_start": "joint"},
    # Each channel's histogram matched on its own: the least displacement that matches every channel's distribution,
    # where the joint transfer moved split_tone's colours to B's distribution by another map than the truth's.
    "fast_transfer_channels": {**FAST, "colour_transfer_start": "channels"},
    # The channel start held by the colour loss: ten minutes of training took dusk 4.4 dB below its start, and the
    # colour loss pulls towards the moments the start already matches.
    "fast_transfer_colour1": {**FAST, "colour_transfer_start": "channels", "lambda_colour": 1.0},
    # The channel start kept as fitted (--colour_map_lr 0): on dusk the map drifted 1.7 dB below its start in ten
    # minutes, while only the residual is needed to learn what a colour map cannot.
    "fast_transfer_fixed": {**FAST, "colour_transfer_start": "channels", "colour_map_lr": 0.0},
    # The fixed start with a third of the cycle weight: with the map fixed, dusk still fell 3 dB in the first 30 s,
    # while the start's held-out cycle L1 (4.6 of 255) is lower than that of the truth with its best cubic inverse (5.6).
    "fast_transfer_fixed_cycle3": {**FAST, "colour_transfer_start": "channels", "colour_map_lr": 0.0,
                                   "lambda_A": 3.0, "lambda_B": 3.0},
    # The channel start with a quarter of the learning rate everywhere: Adam moves every weight by about the lr
    # per step even where the gradient is only noise, as it is near a good start.
    "fast_transfer_slow": {**FAST, "colour_transfer_start": "channels", "lr": 5e-5},
    # Both of the levers that each passed one of dusk and split_tone: the quarter lr (dusk 33.87 dB) and the colour
    # loss (split_tone 26.21 dB).
    "fast_transfer_slow_colour1": {**FAST, "colour_transfer_start": "channels", "lr": 5e-5, "lambda_colour": 1.0},
    # The start held by an L1 on what the residual changes (--lambda_residual): near a good start the critic scores
    # G(a) as it scores the truth, and Adam still moves every weight by about the lr, so an anchor that only a
    # consistent adversarial gradient outweighs keeps the start where the critic has nothing to say. The joint start,
    # which began above the colour transfer on every task but flat, where the channel start missed split_tone.
    "fast_transfer_anchor": {**FAST, "colour_transfer_start": "joint", "colour_map_lr": 0.0, "lambda_residual": 10.0},
    # The same on the channel start, the better start on dusk (37.32 against 35.83 dB).
    "fast_transfer_channels_anchor": {**FAST, "colour_transfer_start": "channels", "colour_map_lr": 0.0,
                                      "lambda_residual": 10.0},
    # The colour loss leads everywhere at 2 minutes, then pulls the tone to B's content (etching fell 2 dB after it);
    # fading it to zero over the first 800 iterations (about a third of a 10-minute run at 64 px) keeps the lead only.
    "fast_colour1_decay": {**FAST, "lambda_colour": 1.0, "lambda_colour_decay_iters": 800},
    # Faded over twice as long: with 800 winter fell 1 dB once the colour weight was gone.
    "fast_colour1_decay1600": {**FAST, "lambda_colour": 1.0, "lambda_colour_decay_iters": 1600},
    # A third of the paper's cycle weight: at 10 the L1 cycle term's pull (a constant force per pixel, whatever the
    # error) holds both generators near the identity against the GAN's weak pull on a global tone.
    "fast_cycle3": {**FAST, "lambda_A": 3.0, "lambda_B": 3.0},
    "fast_cycle5": {**FAST, "lambda_A": 5.0, "lambda_B": 5.0},
    "fast_cycle3_colour1": {**FAST, "lambda_A": 3.0, "lambda_B": 3.0, "lambda_colour": 1.0},
    # The cycle weight at a third early, when the generators must leave the identity together, rising to the
    # paper's 10 by half the schedule, when they are each other's inverse and the full weight holds the content.
    "fast_cycle_ramp": {**FAST, "lambda_cycle_start": 0.3, "lambda_cycle_ramp": 0.5},
    # The paper's cycle weight, as a smooth L1: the pull on a cycle error below 0.1 fades with it, so the kink
    # of the L1 at zero no longer pins both generators to the identity, and large errors are held as before.
    "fast_cycle_smooth": {**FAST, "cycle_beta": 0.1},
    # Smooth while the generators leave the identity, the L1 again from half the schedule on: on winter the smooth
    # loss found the tone in 2 minutes, then lost detail for the rest of the run, which the L1's hold on small
    # errors prevents.
    "fast_cycle_smooth_decay": {**FAST, "cycle_beta": 0.1, "cycle_beta_decay": 0.5},
    # Twice the paper's learning rate for all four networks: in a 10-minute run the generators take about 2,400 Adam
    # steps, and on a global tone they end near the identity although the critic scores the truth as real as B.
    "fast_lr2x": {**FAST, "lr": 4e-4},
    # Smooth only for the tone, the L1 for the detail, throughout: the smooth loss let winter and dusk leave the
    # identity fast, and held to the end it lost winter's detail; here the detail keeps the L1's hold from the start.
    "fast_cycle_smooth_tone": {**FAST, "cycle_beta": 0.1, "cycle_beta_blur": 8},
    # The same, with the tone's L1 back by half the schedule: held smooth to the end, winter found its tone in
    # 2 minutes and then drifted away from it (the SSIM held: the tone drifted, not the detail).
    "fast_cycle_smooth_tone_decay": {**FAST, "cycle_beta": 0.1, "cycle_beta_blur": 8, "cycle_beta_decay": 0.5},
    # The one-sided CUT model with the fast bundle (its lambda_NCE, pool and identity PatchNCE beneath), and FastCUT.
    "cut": {**FAST, "model": "cut"},
    "fastcut": {**FAST, "model": "cut", "CUT_mode": "FastCUT"},
}
# The data each curve trains on (the held-out crops are the same for all): the task's unpaired domains,
# every pair, or the unpaired domains plus PAIRED_FRACTION of the pairs.
CURVE_DATA = {"pix2pix": "pairs", "pix2pix_fast": "pairs", "fast_paired": "some_pairs", "fast_paired_data": "some_pairs"}
PAIRED_FRACTION = 0.1
MINUTE_MARKS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0)
COLOURS = {"paper": (200, 60, 40), "fast": (30, 100, 200), "fast_colour": (130, 40, 170), "pix2pix": (20, 140, 60),
           "pix2pix_fast": (230, 140, 0), "fast_paired": (0, 170, 190), "fast_paired_data": (120, 120, 60),
           "fast_nce": (220, 40, 140), "fast_msd": (90, 90, 90), "fast_colour1": (170, 110, 200),
           "fast_colour1_decay": (110, 60, 160), "fast_colour1_decay1600": (80, 30, 120),
           "cut": (0, 120, 90), "fastcut": (150, 200, 40),
           "fast_cycle3": (240, 90, 20), "fast_cycle5": (250, 160, 110), "fast_cycle3_colour1": (200, 170, 0),
           "fast_cycle_ramp": (120, 60, 20), "fast_cycle_smooth": (60, 160, 160),
           "fast_cycle_smooth_decay": (20, 110, 110), "fast_lr2x": (200, 0, 0), "fast_cycle_smooth_tone": (230, 110, 160),
           "fast_cycle_smooth_tone_decay": (160, 50, 100),
           "fast_transfer": (0, 90, 160), "fast_transfer_channels": (0, 160, 110), "fast_transfer_colour1": (190, 120, 0),
           "fast_transfer_fixed": (120, 0, 60), "fast_transfer_fixed_cycle3": (220, 60, 0),
           "fast_transfer_slow": (60, 60, 200), "fast_transfer_slow_colour1": (200, 0, 200),
           "fast_transfer_anchor": (230, 100, 0), "fast_transfer_channels_anchor": (110, 170, 0)}


def mean_scores(held_out, image: str = "fake") -> dict[str, float]:
    """Mean PSNR and SSIM against T(a) of each crop's ``image`` (``fake``: G(a); ``real``: doing nothing)."""
    return {"psnr_db": float(np.mean([psnr(getattr(t, image), t.truth) for t in held_out])),
            "ssim": float(np.mean([ssim(getattr(t, image), t.truth) for t in held_out]))}


def score(generator, dataroot: Path) -> dict[str, float]:
    """Mean PSNR and SSIM of generator(a) against T(a) over the held-out crops."""
    return mean_scores(translate_test_crops(generator, dataroot))


def checkerboard(generator, dataroot: Path) -> dict[str, float]:
    """The spectrum peak of the held-out translations at periods 2 and 4 (the upsampling strides)."""
    fakes = torch.cat([t.fake for t in translate_test_crops(generator, dataroot)])
    return {f"period_{p}": periodic_peak(fakes, p) for p in (2, 4)}


def domain_pixels(folder: Path, count: int = 300_000, seed: int = 0, transform=None) -> np.ndarray:
    """A random sample of the colours of every image in ``folder`` (after ``transform``): (count, 3) in [0, 1]."""
    transform = transform or (lambda image: image)
    pixels = np.concatenate([np.asarray(transform(load_image(p)).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255
                             for p in find_images(folder)])
    return pixels[np.random.default_rng(seed).choice(len(pixels), min(count, len(pixels)), replace=False)]


def recoloured_psnr(transfer, images: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    """Mean PSNR against ``truths`` of ``images`` (each (1, 3, H, W) in [-1, 1]) put through a colour ``transfer``."""
    scores = []
    for image, truth in zip(images, truths):
        pixels = (image[0].permute(1, 2, 0).reshape(-1, 3).double().numpy() + 1) / 2
        mapped = torch.from_numpy(transfer(pixels)).T.reshape(image.shape) * 2 - 1
        scores.append(psnr(mapped, truth))
    return float(np.mean(scores))


def unpaired_colour_transfer(dataroot: Path, held_out, b_pixels: np.ndarray) -> float:
    """Mean held-out PSNR of the colour distribution transfer fitted from trainA's colours to trainB's (``b_pixels``)."""
    transfer = distribution_transfer(domain_pixels(dataroot / "trainA"), b_pixels)
    return recoloured_psnr(transfer, [t.real for t in held_out], [t.truth for t in held_out])


def truth_in_b_colours(dataroot: Path, task: str, held_out, b_pixels: np.ndarray) -> float:
    """Mean held-out PSNR of the true translation T(a), recoloured so that T(trainA) takes trainB's colours
    (``b_pixels``, a sample of them).

    A learner that matches domain B's colour distribution exactly, as the GAN objective asks, and is
    otherwise perfect, ends about here. Where trainA and trainB show different content, T(trainA) and
    trainB differ in colour, and this falls below the per-pixel ceiling: the data, not the method,
    then cap what an unpaired learner can score.
    """
    transfer = distribution_transfer(domain_pixels(dataroot / "trainA", transform=TASKS[task].transform), b_pixels)
    truths = [t.truth for t in held_out]
    return recoloured_psnr(transfer, truths, truths)


def references(dataroot: Path, task: str) -> dict[str, float]:
    """Doing nothing, the per-pixel colour-mapping ceiling, the unpaired colour transfer and the truth
    in B's colours, on the held-out crops."""
    held_out = translate_test_crops(lambda a: a, dataroot)
    ceiling = colour_mapping_ceiling([t.real for t in held_out], [t.truth for t in held_out])
    truth, real = torch.cat([t.truth for t in held_out]), torch.cat([t.real for t in held_out])
    nothing = mean_scores(held_out, "real")
    b_pixels = domain_pixels(dataroot / "trainB", seed=1)  # both colour transfers aim at the same sample of B
    return {"nothing_psnr_db": nothing["psnr_db"], "nothing_ssim": nothing["ssim"],
            "ceiling_psnr_db": ceiling["best_psnr_db"],
            "unpaired_transfer_psnr_db": unpaired_colour_transfer(dataroot, held_out, b_pixels),
            "truth_in_b_colours_psnr_db": truth_in_b_colours(dataroot, task, held_out, b_pixels),
            "truth_colour_swd_255": colour_swd_255(np.concatenate([colour_sample(t.truth) for t in held_out]),
                                                   test_b_colours(dataroot)),
            **{f"truth_checkerboard_period_{p}": periodic_peak(truth, p) for p in (2, 4)},
            **{f"input_checkerboard_period_{p}": periodic_peak(real, p) for p in (2, 4)}}


def test_b_colours(dataroot: Path) -> np.ndarray:
    """The colour sample of testB, the target domain's held-out images, that the colour distance compares with."""
    return np.concatenate([colour_sample(to_tensor(load_image(path))) for path in find_images(dataroot / "testB")])


class Curve:
    """The fit() callback: keeps the training clock and scores the generators at each mark."""

    def __init__(self, dataroot: Path, marks_min: tuple[float, ...], limit_min: float):
        self.dataroot, self.limit = dataroot, limit_min * 60
        self.marks = [m * 60 for m in marks_min if m <= limit_min]
        self.points: list[dict] = []
        self.trained = 0.0
        self.mark = time.perf_counter()
        self.test_b_colours = test_b_colours(dataroot)

    def generators(self, trainer: Trainer) -> dict[str, tuple[torch.nn.Module, torch.nn.Module | None]]:
        """The (A->B, B->A) generators to score: the live ones, and their moving averages where kept."""
        back = getattr(trainer.model, "g_ba", None)  # a one-way model (CUT) has none
        nets = {"live": (trainer.model.g_ab, back)}
        if trainer.ema:
            nets["ema"] = (trainer.ema["g_ab_ema"], trainer.ema.get("g_ba_ema"))
        return nets

    def record(self, trainer: Trainer) -> None:
        point = {"minutes": self.trained / 60, "iters": trainer.total_iters}
        for kind, (forward, back) in self.generators(trainer).items():
            modes = [(net, net.training) for net in (forward, back) if net is not None]
            for net, _ in modes:
                net.eval()
            point.update({f"{kind}_{k}": v for k, v in self.numbers(forward, back).items()})
            for net, was_training in modes:
                net.train(was_training)
        self.points.append(point)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in point.items() if k not in ("iters",))
        print(f"    {shown}", flush=True)
        self.mark = time.perf_counter()  # the scoring is not training time

    def numbers(self, forward, back) -> dict[str, float]:
        """The truth's PSNR and SSIM, and the numbers an unpaired user has without a truth: the held-out cycle
        L1 (a -> G -> F) and the colour distance of G(testA) to testB (what --keep_best could select by)."""
        held_out = translate_test_crops(forward, self.dataroot)
        numbers = mean_scores(held_out)
        numbers["colour_swd_255"] = colour_swd_255(np.concatenate([colour_sample(t.fake) for t in held_out]),
                                                   self.test_b_colours)
        if back is not None:
            with torch.inference_mode():
                numbers["cycle_l1_255"] = float(np.mean([l1_255(back(t.fake).clamp(-1, 1), t.real) for t in held_out]))
        return numbers

    def training_clock(self) -> float:
        """Seconds of training so far, without the scoring: what the run's --time_budget counts."""
        return self.trained + time.perf_counter() - self.mark

    def __call__(self, trainer: Trainer) -> bool:
        self.trained += time.perf_counter() - self.mark
        while self.marks and self.trained >= self.marks[0]:
            self.marks.pop(0)
            self.record(trainer)
        self.mark = time.perf_counter()
        return self.trained >= self.limit


def paired_data(dataroot: Path, task: str, kind: str) -> Path:
    """The training folder of a curve: ``dataroot`` itself, or beside it trainA/ + trainB/ of pairs (a crop and
    its true look, same names): all of them ("pairs"), or the unpaired domains plus PAIRED_FRACTION of them
    ("some_pairs", every 1/PAIRED_FRACTION-th crop of A)."""
    if kind == "unpaired":
        return dataroot
    root = dataroot.with_name(f"{dataroot.name}_{kind}")
    marker = root / "made.json"
    if marker.is_file():
        return root
    crops = find_images(dataroot / "trainA")
    partnered = crops if kind == "pairs" else crops[::round(1 / PAIRED_FRACTION)]
    for sub in ("trainA", "trainB"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for path in crops:
        load_image(path).save(root / "trainA" / path.name)
    for path in partnered:
        TASKS[task].transform(load_image(path)).save(root / "trainB" / path.name)
    if kind == "some_pairs":
        for path in find_images(dataroot / "trainB"):
            load_image(path).save(root / "trainB" / f"b_{path.name}")  # B's own crops: no A crop has their names
    marker.write_text(json.dumps({"pairs": len(partnered), "of": len(crops)}))
    return root


def run_curve(task: str, recipe: str, dataroot: Path, workdir: Path, minutes: float, changes: dict, *,
              budget: bool = True) -> dict:
    """Train ``recipe`` on ``task`` for up to ``minutes``; score the held-out crops of ``dataroot`` along the way.
    With ``budget`` the run trains with --time_budget: its schedule is fitted to the minutes and ends there (the
    clock then only guards against a run slower than measured); without, the recipe's epochs run until the clock
    stops them."""
    training = paired_data(dataroot, task, CURVE_DATA.get(recipe, "unpaired"))
    timing = {"time_budget": f"{minutes * 60:g}s"} if budget else {}
    config = build_experiment({**CURVE_RUNS[recipe], "dataroot": str(training), "checkpoints_dir": str(workdir),
                               "name": f"{task}_{recipe}", **timing, **changes})
    trainer = Trainer(config)
    curve = Curve(dataroot, MINUTE_MARKS, minutes * (1.2 if budget else 1.0))
    if config.model.colour_transfer_start != "off":
        trainer.start_from_colour_transfer(make_dataset(trainer))  # so that the 0-minute point is the start itself
    curve.record(trainer)  # at 0 minutes
    curve.marks = [m for m in curve.marks if m > 0]
    fit(trainer, show_progress=False, callback=curve, budget_clock=curve.training_clock)
    if curve.points[-1]["iters"] != trainer.total_iters:
        curve.record(trainer)  # the end of the run (or of the time limit)
    final = load_generator(config.run_dir, "AtoB")  # what translate would use: the EMA when kept
    return {"points": curve.points, "checkerboard": checkerboard(final, dataroot), "iters": trainer.total_iters,
            "final": score(final, dataroot)}


# ---- the plot -------------------------------------------------------------------------------------

def reference_lines(ref: dict) -> list[tuple[str, float, tuple[int, int, int]]]:
    """The horizontal lines of a panel; the truth in B's colours only where the data cap the score
    below the ceiling (with shared content it is near-perfect and would only squash the plot)."""
    lines = [("do nothing", ref["nothing_psnr_db"], (120, 120, 120)),
             ("per-pixel ceiling (fitted to the truth)", ref["ceiling_psnr_db"], (40, 150, 40)),
             ("unpaired colour transfer", ref["unpaired_transfer_psnr_db"], (150, 100, 20))]
    capped = ref.get("truth_in_b_colours_psnr_db")
    if capped is not None and capped < ref["ceiling_psnr_db"]:
        lines.append(("the truth in B's colours", capped, (20, 140, 140)))
    return lines


def plot_curves(results: dict, path: Path) -> Path:
    """One panel per task: held-out PSNR against training minutes, with do-nothing and the ceiling."""
    panel_w, panel_h, margin = 520, 360, 60
    image = Image.new("RGB", (panel_w * len(results), panel_h + 40), "white")
    draw = ImageDraw.Draw(image)
    for i, (task, entry) in enumerate(results.items()):
        left = i * panel_w + margin
        right, top, bottom = (i + 1) * panel_w - 20, 40, panel_h - 10
        ref = entry["references"]
        curves = entry["recipes"]
        lines = reference_lines(ref)
        values = [db for _, db, _ in lines] + [
            p[k] for c in curves.values() for p in c["points"] for k in ("live_psnr_db", "ema_psnr_db") if k in p]
        low, high = np.floor(min(values) - 1), np.ceil(max(values) + 1)
        t_max = max([p["minutes"] for c in curves.values() for p in c["points"]] + [1.0])

        def xy(minutes, db):
            return (left + (right - left) * minutes / t_max, bottom - (bottom - top) * (db - low) / (high - low))

        draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        draw.text((left, 10), f"{task}: held-out PSNR (dB) vs training minutes", fill=(0, 0, 0))
        for db in np.arange(low, high + 1e-9, max(1.0, np.ceil((high - low) / 8))):
            draw.text((left - 40, xy(0, db)[1] - 6), f"{db:.0f}", fill=(0, 0, 0))
        for minute in range(0, int(t_max) + 1, max(1, int(t_max) // 10)):
            draw.text((xy(minute, low)[0] - 4, bottom + 4), str(minute), fill=(0, 0, 0))
        for label, db, colour in lines:
            draw.line([xy(0, db), xy(t_max, db)], fill=colour, width=1)
            draw.text((xy(0, db)[0] + 4, xy(0, db)[1] - 12), f"{label} {db:.1f}", fill=colour)
        for row, (recipe, curve) in enumerate(curves.items()):
            colour = COLOURS.get(recipe, (0, 0, 0))
            key = f"{translated(curve)}_psnr_db"
            draw.line([xy(p["minutes"], p[key]) for p in curve["points"]], fill=colour, width=2)
            draw.text((right - 150, top + 6 + 14 * row), f"{recipe} ({key.split('_')[0]})", fill=colour)
            if chosen := selections(curve):  # the checkpoint --keep_best AtoB_colour_swd_255 would keep
                x, y = xy(chosen["colour_swd_255"]["minutes"], chosen["colour_swd_255"]["psnr_db"])
                draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=colour, width=2)
                draw.text((left + 4, bottom - 16), "o: kept by the lowest colour distance to testB", fill=(0, 0, 0))
    image.save(path)
    return path


def translated(curve: dict) -> str:
    """Which generator a curve's numbers count: "ema", the moving average that translate uses when the run
    keeps one, else "live"."""
    return "ema" if "ema_psnr_db" in curve["points"][0] else "live"


# What an unpaired user could keep the best checkpoint by (--keep_best AtoB_...): no truth needed. Lower is better.
SELECTION_NUMBERS = {"colour_swd_255": "lowest colour distance to testB", "cycle_l1_255": "lowest held-out cycle L1"}


def selections(curve: dict) -> dict[str, dict] | None:
    """The points of a curve that each way of choosing a checkpoint keeps: its end, its peak (hindsight: the
    truth's best, which no unpaired user has) and the lowest of each SELECTION_NUMBERS number; each as
    {"minutes", "psnr_db"}. Only trained points count (--keep_best evaluates from the first epoch on). None
    for curves recorded before the numbers were."""
    key = translated(curve)
    if f"{key}_colour_swd_255" not in curve["points"][-1]:
        return None
    trained = [p for p in curve["points"] if p["iters"] > 0]
    if not trained:
        return None

    def kept(point: dict) -> dict:
        return {"minutes": point["minutes"], "psnr_db": point[f"{key}_psnr_db"],
                "colour_swd_255": point[f"{key}_colour_swd_255"]}

    chosen = {"end": kept(trained[-1]), "peak": kept(max(trained, key=lambda p: p[f"{key}_psnr_db"]))}
    for number in SELECTION_NUMBERS:
        scored = [p for p in trained if f"{key}_{number}" in p]
        if scored:
            chosen[number] = kept(min(scored, key=lambda p: p[f"{key}_{number}"]))
    return chosen


def selection_table(results: dict) -> str:
    """Held-out PSNR of the checkpoint each rule keeps, per task and recipe; empty without the numbers."""
    rows = [(task, recipe, chosen) for task, entry in results.items() for recipe, curve in entry["recipes"].items()
            if (chosen := selections(curve))]
    if not rows:
        return ""
    header = ["end", "peak (hindsight, from the truth)", *SELECTION_NUMBERS.values(),
              "colour distance: kept by it; the truth's"]
    lines = ["| task | recipe | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for task, recipe, chosen in rows:
        cells = [f"{c['psnr_db']:.2f} dB ({c['minutes']:.1f} min)" if (c := chosen.get(name)) else "-"
                 for name in ("end", "peak", *SELECTION_NUMBERS)]
        truth = results[task]["references"].get("truth_colour_swd_255")
        cells.append(f"{chosen['colour_swd_255']['colour_swd_255']:.2f}; " + (f"{truth:.2f}" if truth is not None else "-"))
        lines.append(f"| {task} | {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    lines = ["| task | recipe | PSNR at 2 min | PSNR at the end | SSIM at the end | do nothing | per-pixel ceiling | "
             "unpaired colour transfer | the truth in B's colours | checkerboard p2 / p4 (input; truth) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, entry in results.items():
        ref = entry["references"]
        for recipe, curve in entry["recipes"].items():
            key = translated(curve)
            at2 = next((p for p in curve["points"] if p["minutes"] >= 2.0), curve["points"][-1])  # the 2-minute mark
            end = curve["points"][-1]
            cb = curve["checkerboard"]
            lines.append(
                f"| {task} | {recipe} | {at2[f'{key}_psnr_db']:.2f} dB ({at2['minutes']:.1f} min) | "
                f"{end[f'{key}_psnr_db']:.2f} dB ({end['minutes']:.1f} min, {end['iters']} it) | {end[f'{key}_ssim']:.3f} | "
                f"{ref['nothing_psnr_db']:.2f} dB | {ref['ceiling_psnr_db']:.2f} dB | {ref['unpaired_transfer_psnr_db']:.2f} dB | "
                f"{ref.get('truth_in_b_colours_psnr_db', float('nan')):.2f} dB | {cb['period_2']:.1f} / "
                f"{cb['period_4']:.1f} ({ref['input_checkerboard_period_2']:.1f} / {ref['input_checkerboard_period_4']:.1f}; "
                f"{ref['truth_checkerboard_period_2']:.1f} / {ref['truth_checkerboard_period_4']:.1f}) |")
    return "\n".join(lines)


def data_bound_target(references: dict) -> float | None:
    """The end PSNR a recipe must beat on a task by the target these data can support: at least the truth in
    B's colours less 1 dB (an unpaired learner knows B by its distribution only), and above doing nothing.
    None where the references predate the truth in B's colours."""
    truth_in_b = references.get("truth_in_b_colours_psnr_db")
    return None if truth_in_b is None else max(truth_in_b - 1.0, references["nothing_psnr_db"])


def kept_psnr(curve: dict, rule: str) -> float | None:
    """The held-out PSNR of the checkpoint a run keeps: its end ("end"), or the point with the lowest
    SELECTION_NUMBERS ``rule`` (None where the curve did not record it)."""
    if rule == "end":
        return curve["points"][-1][f"{translated(curve)}_psnr_db"]
    chosen = selections(curve)
    return chosen[rule]["psnr_db"] if chosen and rule in chosen else None


def gaps(results: dict, rule: str = "end") -> dict[str, dict]:
    """Per recipe: the gap of the checkpoint it keeps by ``rule`` (the end of the run, or a SELECTION_NUMBERS
    number) to each task's per-pixel ceiling (dB), the mean and the worst task, over the tasks it ran on, and
    the tasks where it is short of the data-bound target. A recipe is judged by these, never by one task."""
    by_recipe: dict[str, dict] = {}
    short: dict[str, dict] = {}
    for task, entry in results.items():
        ceiling = entry["references"]["ceiling_psnr_db"]
        target = data_bound_target(entry["references"])
        for recipe, curve in entry["recipes"].items():
            if (end := kept_psnr(curve, rule)) is None:
                continue
            by_recipe.setdefault(recipe, {})[task] = ceiling - end
            if target is not None and end <= target:
                short.setdefault(recipe, {})[task] = target - end
    return {recipe: {"tasks": per_task, "mean": float(np.mean(list(per_task.values()))),
                     "worst": max(per_task, key=per_task.get), "short_of_target": short.get(recipe, {})}
            for recipe, per_task in by_recipe.items()}


def gap_table(results: dict) -> str:
    lines = ["| recipe | tasks | mean gap to the ceiling | worst task (gap) | short of the data-bound target (by) |",
             "|---|---|---|---|---|"]
    for rule, suffix in (("end", ""), ("colour_swd_255", " (kept by the lowest colour distance)")):
        for recipe, g in gaps(results, rule).items():
            short = ", ".join(f"{task} ({by:.2f} dB)" for task, by in g["short_of_target"].items()) or "none"
            lines.append(f"| {recipe}{suffix} | {len(g['tasks'])} | {g['mean']:.2f} dB | {g['worst']} "
                         f"({g['tasks'][g['worst']]:.2f} dB) | {short} |")
    return "\n".join(lines)


def write_report(results: dict, output: Path) -> None:
    plot = plot_curves(results, output / "curves.png")
    table = "\n\n".join(part for part in (markdown_table(results), gap_table(results), selection_table(results)) if part)
    (output / "curves.md").write_text(table + "\n")
    print(table)
    print(f"plot: {plot}; numbers: {output / 'curves.json'}")


def replot_main(args) -> None:
    """Table and plot again from a curves.json (references recomputed when --data holds the tasks)."""
    results = json.loads(args.from_json.read_text())
    for task, entry in results.items():
        if args.data and data_folder(args.data, task, args.scenes, args.size).is_dir():
            entry["references"] = references(data_folder(args.data, task, args.scenes, args.size), task)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "curves.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.output)


def share_content(dataroot: Path, task: str) -> None:
    """Replace trainB by T(trainA): the same content in both domains, the pairing still random.

    The data's marker records it, so that a later run without --shared_content on the same --data
    rebuilds the real trainB instead of silently training on this one.
    """
    for old in find_images(dataroot / "trainB"):
        old.unlink()
    for path in find_images(dataroot / "trainA"):
        TASKS[task].transform(load_image(path)).save(dataroot / "trainB" / path.name)
    marker = dataroot / DATA_MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "shared_content": True}))


def data_folder(folder: Path, task: str, scenes: int, size: int = 64) -> Path:
    """Where the data of ``task`` lie under ``folder``: a procedural task of another scene count than
    SCENE_COUNT, or any task at another crop size than 64 px, has a folder of its own (``data_162_scenes``,
    ``data_128px``), so that they are never mistaken for each other."""
    scaled = task in NEW_TASKS and scenes != SCENE_COUNT
    name = f"data_{scenes}_scenes" if scaled else "data"
    return folder / task / (f"{name}_{size}px" if size != 64 else name)


def task_data(folder: Path, task: str, scenes: int, size: int = 64) -> Path:
    """Build (or find) the data of ``task`` under ``folder``; the procedural tasks from ``scenes`` scenes
    spread over the same crop counts; crops of ``size`` px (a multiple of 64) from photos scaled with them."""
    where, scale = data_folder(folder, task, scenes, size), size // 64
    if task not in NEW_TASKS:
        return build_demo_dataset(where, task=TASKS[task], scale=scale)
    variant, crops = with_scenes(NEW_TASKS[task], scenes)
    return build_demo_dataset(where, task=variant, scale=scale, **crops)


def size_options(size: int) -> dict:
    """The crop options of every run at ``size`` px: random ``size`` crops of training crops an eighth larger."""
    return {"load_size": size * 9 // 8, "crop_size": size} if size != 64 else {}


def curves_main(args, changes: dict) -> None:
    args.output.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    reused = json.loads(args.reuse.read_text()) if args.reuse else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.data or tmp  # --data keeps the data and the runs for a look afterwards
        for task in args.tasks:
            dataroot = task_data(Path(tmp), task, args.scenes, args.size)
            if args.shared_content:
                share_content(dataroot, task)
            results[task] = {"references": references(dataroot, task), "recipes": {}}
            earlier = reused.get(task, {}).get("recipes", {})
            results[task]["recipes"].update({name: curve for name, curve in earlier.items() if name not in args.recipes})
            print(f"{task}: {TASKS[task].description}; {results[task]['references']}", flush=True)
            for recipe in args.recipes:
                print(f"  {recipe}:", flush=True)
                results[task]["recipes"][recipe] = run_curve(task, recipe, dataroot, Path(tmp) / task, args.minutes, changes,
                                                             budget=not args.no_budget)
                results[task]["recipes"] = {name: results[task]["recipes"][name] for name in CURVE_RUNS
                                            if name in results[task]["recipes"]}  # paper first, as in the table
                (args.output / "curves.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.output)


def single_run_main(args, changes: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        task = args.tasks[0]  # one run: the first task named (winter unless --tasks says otherwise)
        dataroot = task_data(args.data or Path(tmp), task, args.scenes, args.size)
        if args.shared_content:
            share_content(dataroot, task)
        runs = args.data / task / "runs" if args.data else tmp  # --data keeps the run for a look afterwards
        config = build_experiment({**DEMO_OPTIONS, "dataroot": str(dataroot), "checkpoints_dir": str(runs), "name": "learning",
                                   "max_iters": args.iters, **changes})
        started = time.time()
        fit(Trainer(config), show_progress=False)
        minutes = (time.time() - started) / 60
        held_out = translate_test_crops(load_generator(config.run_dir, "AtoB"), dataroot)
    trained, nothing = mean_scores(held_out), mean_scores(held_out, "real")
    print(f"{task}: {args.iters} iterations in {minutes:.1f} min ({', '.join(args.option) or 'the fast recipe'}), "
          f"{len(held_out)} held-out crops:")
    print(f"  trained:    PSNR {trained['psnr_db']:6.2f} dB   SSIM {trained['ssim']:.3f}")
    print(f"  do nothing: PSNR {nothing['psnr_db']:6.2f} dB   SSIM {nothing['ssim']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a training option to change")
    parser.add_argument("--data", type=Path, default=None, help="where to build the data (and, with --curve, keep the runs; default: a temporary folder)")
    parser.add_argument("--curve", action="store_true", help="learning curves of several recipes on both tasks")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--recipes", nargs="+", default=list(CURVE_RUNS), choices=list(CURVE_RUNS))
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per curve")
    parser.add_argument("--no_budget", action="store_true",
                        help="curves: run the recipes' own epochs until the clock stops them, not --time_budget")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/learning"))
    parser.add_argument("--from_json", type=Path, default=None, help="only redo the table and plot of a curves.json")
    parser.add_argument("--reuse", type=Path, default=None, help="keep the other recipes' curves from this curves.json")
    parser.add_argument("--scenes", type=int, default=SCENE_COUNT,
                        help="how many procedural scenes the new tasks are built from (same crop counts)")
    parser.add_argument("--shared_content", action="store_true", help="trainB = the transform of trainA's own crops")
    parser.add_argument("--size", type=int, default=64, choices=(64, 128, 192, 256),
                        help="crop size in pixels: the photos (and scenes) are scaled with it, so a crop shows the same "
                             "share of a scene; the networks stay as the recipe has them")
    args = parser.parse_args()
    changes = {**size_options(args.size), **dict(item.partition("=")[::2] for item in args.option)}
    print(describe_machine(), flush=True)
    if args.from_json:
        replot_main(args)
    else:
        (curves_main if args.curve else single_run_main)(args, changes)


if __name__ == "__main__":
    main()
