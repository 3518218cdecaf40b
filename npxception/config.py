"""Constants of the network and its Keras conventions, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    # Keras' BatchNormalization default, used by every BN in keras' xception.py.
    # PyTorch ports often keep PyTorch's 1e-5, which is exactly the kind of
    # silent difference npxception exists to catch.
    bn_epsilon: float = 1e-3
    # The input size the paper trains at and the official weights expect with the top.
    default_input_shape: tuple = (299, 299, 3)
    # Keras refuses smaller inputs for Xception without the top: below 71 the
    # exit flow's feature map would vanish (71 -> 35 -> 33 -> 17 -> 9 -> 5 -> 3).
    min_input_size: int = 71
    # Keras' "tf" preprocessing maps [0, 255] to [-1, 1]: x / 127.5 - 1.
    preprocess_scale: float = 127.5
    # keras.utils.load_img's default resampling; cross-checks must compare like with like.
    default_interpolation: str = "nearest"


CONFIG = Config()
