"""Data transforms: changes to a task's examples, applied to the networks of some halves
(``experiments[].transforms``). ``block_shuffle`` is the block-shuffled target domain of
Neyshabur, Sedghi & Zhang (2020), "What is being transferred in transfer learning?": the
image is cut into square blocks and the blocks are permuted, destroying the visual features
above the block's scale while keeping the low-level statistics within each block."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from transferbench import DataTransform, hookimpl


class BlockShuffleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_size: int = Field(8, gt=0, description="side of the square blocks in pixels; must divide the image's "
                            "height and width (the block equal to the image changes nothing)")
    seed: int = Field(0, ge=0, description="seed of the permutation of the blocks: one permutation for every "
                      "image of the task, as a fixed change of the domain")


class BlockShuffle(DataTransform[BlockShuffleParams]):
    """Cut each image into blocks of ``block_size`` pixels and permute the blocks (one seeded
    permutation for every image)."""

    description = "permute square blocks of each image with one seeded permutation (Neyshabur et al. 2020)"
    Params = BlockShuffleParams

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        b = self.params.block_size
        if len(shape) < 2 or shape[-1] % b or shape[-2] % b:
            return (f"block_size {b} must divide the images' height and width; the data source gives "
                    f"{'x'.join(map(str, shape))}")
        return None

    def permutation(self, blocks: int) -> torch.Tensor:
        """The order of the blocks: the same for every image and every call."""
        return torch.randperm(blocks, generator=torch.Generator().manual_seed(self.params.seed))

    def apply(self, inputs: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.params.block_size
        h, w = inputs.shape[-2:]
        why = self.check_shape(tuple(inputs.shape[1:]))
        if why:
            raise ValueError(why)
        gh, gw = h // b, w // b
        # (..., H, W) -> (..., gh, gw, b, b): one row per block, in reading order
        blocks = inputs.unflatten(-1, (gw, b)).unflatten(-3, (gh, b)).transpose(-3, -2).flatten(-4, -3)
        shuffled = blocks[..., self.permutation(gh * gw), :, :]
        out = shuffled.unflatten(-3, (gh, gw)).transpose(-3, -2).flatten(-2, -1).flatten(-3, -2)
        return out.contiguous(), labels

    @classmethod
    def example_params(cls, workdir):
        return {"block_size": 4, "seed": 1}


@hookimpl
def register_data_transforms(register) -> None:
    register("block_shuffle", BlockShuffle)
