"""``cyclegan push``: a run as a Hugging Face Hub model repository.

The repository holds ``model.safetensors`` (a cyclegan checkpoint of the generators, their moving averages
when the run kept them, and the discriminators on request: no training state), ``config.json`` (the run's
options), ``sample.png`` (the run's newest sample grid) and ``README.md``, a model card written from the
run: what it translates, the data, recipe and options, iterations, the evaluation numbers of its
``eval_*.json``, how to use it, the citation and the licence. ``hf://owner/name`` then loads it anywhere a
checkpoint is taken (``hub``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, stored_network
from .config import ExperimentConfig, flatten_config_dict
from .heldout import epoch_label
from .hub import DEFAULT_REVISION, HF_PREFIX, WEIGHTS_FILE, check_repo_id, upload_folder
from .names import GENERATOR_FOR_DIRECTION

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLE_FILE = "sample.png"
DEFAULT_LICENSE = "other"
# Options that say where and how a run was kept, not what it learnt: left out of the card's option list.
RUN_LOCAL_OPTIONS = frozenset({
    "dataroot", "checkpoints_dir", "name", "device", "num_threads", "print_freq", "display_freq", "save_epoch_freq",
    "save_latest_freq", "tensorboard", "on_bad_image", "on_nonfinite", "eval_freq", "eval_truth", "keep_best",
    "allow_emulated_precision", "compile", "fused_adam", "memory_format",
})
CITATIONS = {
    "cycle_gan": """@inproceedings{CycleGAN2017,
  title={Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks},
  author={Zhu, Jun-Yan and Park, Taesung and Isola, Phillip and Efros, Alexei A},
  booktitle={IEEE International Conference on Computer Vision (ICCV)},
  year={2017}
}""",
    "pix2pix": """@inproceedings{isola2017image,
  title={Image-to-Image Translation with Conditional Adversarial Networks},
  author={Isola, Phillip and Zhu, Jun-Yan and Zhou, Tinghui and Efros, Alexei A},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2017}
}""",
    "cut": """@inproceedings{park2020cut,
  title={Contrastive Learning for Unpaired Image-to-Image Translation},
  author={Taesung Park and Alexei A. Efros and Richard Zhang and Jun-Yan Zhu},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2020}
}""",
}
MODEL_WORDS = {"cycle_gan": "CycleGAN (two generators, unpaired data)", "pix2pix": "pix2pix (paired data)",
               "cut": "CUT (one generator, unpaired data)"}


def push_run(run: str | Path, repo: str, *, private: bool = False, revision: str = DEFAULT_REVISION,
             with_discriminators: bool = False, license: str = DEFAULT_LICENSE, message: str | None = None) -> str:
    """Upload ``run`` (a run folder or checkpoint file) to the Hub model repository ``repo``; the commit's URL."""
    check_repo_id(repo)
    checkpoint = Checkpoint(run)
    with tempfile.TemporaryDirectory() as tmp:
        build_repo_folder(checkpoint, Path(tmp), repo=repo, with_discriminators=with_discriminators, license=license)
        summary = message or f"cyclegan push: {checkpoint.config.name}, epoch {epoch_label(checkpoint)}"
        return upload_folder(Path(tmp), repo, private=private, revision=revision, message=summary)


def build_repo_folder(checkpoint: Checkpoint, folder: Path, *, repo: str, with_discriminators: bool = False,
                      license: str = DEFAULT_LICENSE) -> list[Path]:
    """Write the repository's files into ``folder``; returns them."""
    networks = pushed_networks(checkpoint, with_discriminators=with_discriminators)
    written = [checkpoint.write_weights(folder / WEIGHTS_FILE, networks)]
    (folder / CONFIG_FILE).write_text(checkpoint.config.to_json() + "\n", encoding="utf-8")
    written.append(folder / CONFIG_FILE)
    sample = newest_sample(checkpoint.path.parent)
    if sample is not None:
        written.append(Path(shutil.copyfile(sample, folder / SAMPLE_FILE)))
    card = model_card(checkpoint, repo=repo, networks=networks, evaluation=newest_evaluation(checkpoint),
                      sample=sample is not None, license=license)
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return [*written, folder / CARD_FILE]


def pushed_networks(checkpoint: Checkpoint, *, with_discriminators: bool) -> list[str]:
    """The generators the checkpoint translates with (their moving averages when kept), and the discriminators."""
    generators = [stored_network(checkpoint, name) for direction, name in GENERATOR_FOR_DIRECTION.items()
                  if checkpoint.has_generator(direction)]
    discriminators = [name for name in ("d_a", "d_b") if checkpoint.has_network(name)] if with_discriminators else []
    return generators + discriminators


def newest_sample(run_dir: Path) -> Path | None:
    grids = sorted((run_dir / "samples").glob("epoch_*_iter_*.png"))
    return grids[-1] if grids else None


def newest_evaluation(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The run's eval_<epoch>.json of this checkpoint's epoch, else its newest one."""
    folder = checkpoint.path.parent
    own = folder / f"eval_{epoch_label(checkpoint)}.json"
    reports = [own] if own.is_file() else sorted(folder.glob("eval_*.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        return None
    return json.loads(reports[-1].read_text(encoding="utf-8"))


# ---- the model card -------------------------------------------------------------------------------

def model_card(checkpoint: Checkpoint, *, repo: str, networks: list[str], evaluation: dict | None, sample: bool,
               license: str) -> str:
    config = checkpoint.config
    model = config.model.model
    name = HF_PREFIX + repo
    parts = [front_matter(model, license), f"# {repo.split('/')[1]}\n", what_it_translates(config, networks),
             training_section(checkpoint)]
    if evaluation:
        parts.append(evaluation_section(evaluation))
    if sample:
        parts.append(f"## Samples\n\nThe run's newest sample grid ({sample_rows_words(model)}):\n\n![samples]({SAMPLE_FILE})\n")
    parts += [usage_section(name, two_way=any(n.startswith("g_ba") for n in networks)), citation_section(model),
              f"## Licence\n\nThe weights: `{license}` (chosen with `cyclegan push --license`). They were learnt from "
              f"`{data_name(config)}`, whose own terms apply too. The cyclegan code: BSD-3-Clause.\n"]
    return "\n".join(parts)


def front_matter(model: str, license: str) -> str:
    kind = "paired" if model == "pix2pix" else "unpaired"
    tags = ["cyclegan", "image-to-image", f"{kind}-image-to-image-translation", model.replace("_", "-")]
    return "---\n" + f"license: {license}\nlibrary_name: cyclegan\npipeline_tag: image-to-image\ntags:\n" + \
        "".join(f"- {tag}\n" for tag in dict.fromkeys(tags)) + "---\n"


def data_name(config: ExperimentConfig) -> str:
    return Path(config.data.dataroot).name or str(config.data.dataroot)


def domain_names(config: ExperimentConfig) -> tuple[str, str]:
    """"horse2zebra" -> ("horse", "zebra"), as the official dataset names read; else trainA / trainB."""
    left, sep, right = data_name(config).partition("2")
    names = (left, right) if sep and left and right else ("trainA", "trainB")
    return names[::-1] if config.data.direction == "BtoA" else names


def what_it_translates(config: ExperimentConfig, networks: list[str]) -> str:
    a, b = domain_names(config)
    ways = [f"- `--direction AtoB`: **{a} → {b}**"]
    if any(n.startswith("g_ba") for n in networks):
        ways.append(f"- `--direction BtoA`: **{b} → {a}**")
    averaged = any(n.endswith("_ema") for n in networks)
    held = ", ".join(f"`{n}`" for n in networks)
    return (f"A {MODEL_WORDS[config.model.model]} model trained with "
            f"[cyclegan](https://pypi.org/project/cyclegan/) on `{data_name(config)}`.\n\n" + "\n".join(ways) +
            f"\n\n`{WEIGHTS_FILE}` holds {held}" +
            (" (the moving averages of the generator weights, which translation uses)" if averaged else "") +
            f"; `{CONFIG_FILE}` every option of the run. Nothing in the repository is a pickle.\n")


def training_section(checkpoint: Checkpoint) -> str:
    config, info = checkpoint.config, checkpoint.info
    m, t, d = config.model, config.train, config.data
    lines = ["## Training\n",
             f"- data: `{data_name(config)}` (`--direction {d.direction}`), {d.crop_size} px crops of {d.load_size} px",
             f"- model: `--model {m.model}`, `--netG {m.netG}` (ngf {m.ngf}), `--netD {m.netD}` (ndf {m.ndf})",
             f"- recipe: `--recipe {t.recipe}`",
             f"- trained: {info.get('total_iters', '?')} iterations, {int(info.get('epoch', 1)) - 1} of "
             f"{t.n_epochs + t.n_epochs_decay} epochs done, batch {t.batch_size}"]
    changed = changed_options(config)
    if changed:
        lines.append("- options other than the defaults: " + ", ".join(f"`--{k} {v}`" for k, v in changed.items()))
    return "\n".join(lines) + "\n"


def changed_options(config: ExperimentConfig) -> dict[str, Any]:
    ours = flatten_config_dict(json.loads(config.to_json()))
    defaults = flatten_config_dict(json.loads(ExperimentConfig().to_json()))
    return {k: v for k, v in ours.items() if k not in RUN_LOCAL_OPTIONS and defaults.get(k) != v}


def evaluation_section(report: dict) -> str:
    """A table of the numbers of an ``evaluate_run`` report, one row per direction."""
    rows = ["| direction | images | FID | KID | cycle L1 (0-255) | colour distance (0-255) | PSNR vs truth | SSIM vs truth |",
            "|---|---|---|---|---|---|---|---|"]
    for direction, result in report.get("results", {}).items():
        truth = result.get("truth") or {}
        kid = (f"{result['kid']:.4f} ± {result['kid_std_error']:.4f}" if result.get("kid") is not None else "–")
        rows.append(f"| {direction} | {result.get('images', '?')} | {_number(result.get('fid'), 2)} | {kid} | "
                    f"{_number(result.get('cycle_l1_255'), 2)} | {_number(result.get('colour_swd_255'), 2)} | "
                    f"{_number(truth.get('psnr_db'), 2, ' dB')} | "
                    f"{_number(truth.get('ssim'), 3)} |")
    where = report.get("protocol", {}).get("dataroot", "the run's dataroot")
    return (f"## Evaluation\n\n`cyclegan evaluate` on the test split (epoch {report.get('epoch', '?')}, {where}):\n\n"
            + "\n".join(rows) + "\n")


def _number(value, digits: int, unit: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def sample_rows_words(model: str) -> str:
    return {"cycle_gan": "real A, fake B, reconstructed A / real B, fake A, reconstructed B",
            "pix2pix": "input, translation, partner", "cut": "real A, fake B, real B, G(real B)"}[model]


def usage_section(name: str, *, two_way: bool) -> str:
    back = f"cyclegan translate --checkpoint {name} --direction BtoA other/ --output back/\n" if two_way else ""
    return f"""## Use it

```sh
pip install 'cyclegan[hub]'
cyclegan translate --checkpoint {name} photos/ --output translated/   # any size, tiled when large
{back}cyclegan serve --checkpoint {name}                                  # a web page that translates uploads
```

```python
import cyclegan
generator = cyclegan.load_generator("{name}")              # a torch module in eval mode, inputs in [-1, 1]
translator = cyclegan.Translator.from_checkpoint("{name}")  # files and tensors of any size
```

`@revision` after the name picks a branch, tag or commit; `HF_HUB_OFFLINE=1` loads it from the cache.
"""


def citation_section(model: str) -> str:
    keys = ["cycle_gan"] + ([model] if model != "cycle_gan" else [])
    return "## Citation\n\n```bibtex\n" + "\n\n".join(CITATIONS[k] for k in keys) + "\n```\n"
