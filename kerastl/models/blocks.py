"""The block structure of `keras.applications` backbones, read from their layer names.

Layer-wise learning-rate decay (`train.*.layer_decay`) gives each block of a backbone its
own learning rate: the deeper the block, the closer to the backbone's rate. Every family
kerastl lists names its layers after the block they belong to, one of two ways:

- a block's layers carry its name (`block_3_expand`, `conv4_block2_1_conv`, `block5a_dwconv`):
  a layer whose name gives a new block starts it;
- the layers inside a block have generic names (`conv2d_17`) and the block ends with a named
  layer (InceptionV3's `mixed3` concatenation, InceptionResNetV2's `block35_2_conv`): the
  layers after such a layer start the next block.

Layers that name no block (the stem before the first block, a top convolution, DenseNet's
transition pools) belong to the block before them, the stem to block 0.
"""

from __future__ import annotations

import re

from kerastl.errors import ModelError

# family -> (pattern whose groups name the block, whether it marks a block's last layer)
_RULES = {
    "MobileNet": (r"^conv_(?:dw|pw)_(\d+)", False),
    "MobileNetV2": (r"^(?:expanded_conv|block_(\d+))_", False),
    "MobileNetV3": (r"^expanded_conv(?:_(\d+))?_", False),
    "EfficientNet": (r"^block(\d+[a-z])_", False),
    "EfficientNetV2": (r"^block(\d+[a-z])_", False),
    "ResNet": (r"^conv(\d+)_block(\d+)_", False),
    "ResNetV2": (r"^conv(\d+)_block(\d+)_", False),
    "DenseNet": (r"^conv(\d+)_block(\d+)_", False),
    "ConvNeXt": (r"_stage_(\d+)_block_(\d+)_", False),
    "Xception": (r"^block(\d+)_", False),
    "VGG": (r"^block(\d+)_", False),
    # Cells: stem_1, stem_2, 0, 1, ..., reduce_4, ...; Keras' own numbered names (activation_12) are no cell.
    "NASNet": (r"(?:normal|reduction|adjust)\w*?_((?:stem_|reduce_)?\d+)$", False),
    "InceptionV3": (r"^(mixed\d+)$", True),
    "InceptionResNetV2": (r"^(mixed_\w+|block(?:35|17|8)_\d+_conv)$", True),
}


def block_depths(backbone, family: str) -> dict:
    """{layer name: its block's depth} for every layer of `backbone`, from 0 (the stem) to
    the number of blocks, in the order the layers run."""
    if family not in _RULES:
        raise ModelError(f"model.backbone: layer-wise learning-rate decay does not know the blocks of the "
                         f"{family} family (known: {', '.join(_RULES)})")
    pattern, marks_end = _RULES[family]
    # A block's depth is the order in which its name first appears: the layers of parallel
    # branches (NASNet's cells) may alternate between neighbouring blocks.
    depths, seen, depth, ended = {}, {}, 0, False
    for layer in backbone.layers:
        match = re.search(pattern, layer.name)
        if ended:  # the previous layer closed a block
            depth, ended = depth + 1, False
        if match and not marks_end:
            depth = seen.setdefault(match.groups(), len(seen) + 1)
        depths[layer.name] = depth
        ended = bool(match) and marks_end
    return depths


def layer_decay_factors(backbone, family: str, decay: float) -> list:
    """[(variable, learning-rate factor)] of the backbone's trainable variables: decay **
    (B - depth) for a variable of a layer in block `depth` of B, so the last block learns
    at the backbone's rate and the stem at decay ** B times it."""
    depths = block_depths(backbone, family)
    deepest = max(depths.values())
    if deepest == 0:
        raise ModelError(f"model.backbone: found no blocks in {backbone.name}'s layer names "
                         "for layer-wise learning-rate decay")
    return [(variable, decay ** (deepest - depths[layer.name]))
            for layer in backbone.layers for variable in layer.trainable_weights]
