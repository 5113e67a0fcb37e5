"""The history of generated images that the discriminators see (Shrivastava et al. 2017)."""

from __future__ import annotations

import torch


class ImagePool:
    """Keeps up to ``size`` generated images; ``query`` mixes old ones into what a discriminator sees.

    For each image of a batch: while the pool is filling, store it and return it; once full, with
    probability 1/2 return a random stored image and store the new one in its place, otherwise
    return the new one. ``size == 0`` returns the batch unchanged.
    """

    def __init__(self, size: int, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"pool size must not be negative, got {size}")
        self.size = size
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        picked = []
        for image in images.detach():
            image = image.unsqueeze(0)  # (1, C, H, W)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                picked.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                index = int(torch.randint(self.size, (), generator=self.generator))
                picked.append(self.images[index])
                self.images[index] = image.clone()
            else:
                picked.append(image)
        return torch.cat(picked, 0)

    def state_dict(self) -> dict:
        return {"images": list(self.images), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.images = [image.clone() for image in state["images"]]
        self.generator.set_state(state["generator"])
