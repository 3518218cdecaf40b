"""Constants of the network and its Keras conventions, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    # Keras' BatchNormalization default, used by every BN in keras' xception.py.
    # PyTorch ports often keep PyTorch's 1e-5, which is exactly the kind of
    # silent difference npxception exists to catch.
    bn_epsilon: float = 1e-3
    # The input size the paper trains at and the official weights expect with the top: RGB.
    # Keras builds Xception for any channel count without ImageNet weights (1 for grayscale,
    # 4 for RGBA or RGB+NIR: imagenet_utils.obtain_input_shape); the channels default to 3.
    default_input_shape: tuple = (299, 299, 3)
    # keras.applications.Xception's constructor refuses a smaller fixed input_shape
    # (imagenet_utils.obtain_input_shape(min_size=71), Keras 3 and tf_keras alike), and
    # npxception.Xception keeps its rule. It is the constructor's rule, not the network's:
    # a model built for any size computes down to architecture.min_input_size (7 for
    # Keras' VALID stem), and Keras' predict answers there too (docs/architecture.md).
    constructor_min_size: int = 71
    # Keras' "tf" preprocessing maps [0, 255] to [-1, 1]: x / 127.5 - 1.
    preprocess_scale: float = 127.5
    # keras.utils.load_img's default resampling; cross-checks must compare like with like.
    default_interpolation: str = "nearest"

    # ---- bounds on untrusted input (docs/security.md), each far above real models ----
    # Parameters a supported head may add to the backbone's ~20.9 M: a Dense over
    # 2048 features for ~24,000 classes (ImageNet-21k has 21,843), or a hidden
    # Dense plus a classifier; or the fine-tuning tutorials' Flatten head at 299x299,
    # whose 10x10x2048 = 204,800 features feed a Dense(256): 52.4 M weights (a
    # Dense(512) there, 104.9 M, is refused by the budget, naming it). Weight readers
    # budget (backbone + this) x 8 bytes.
    head_params_margin: int = 64_000_000
    # How deep models may nest in a config: the keras.io fine-tuning recipe nests
    # 3 levels (Sequential augmentation inside a Functional around the backbone).
    max_model_nesting: int = 32
    # Layers in one config, all nesting levels counted: Xception has 134, a
    # fine-tuned classifier a dozen more.
    max_config_layers: int = 10_000
    # The largest input height/width a weight file may declare: a 2048x2048 image
    # already needs about 1 GB of float32 activations in block2.
    max_input_size: int = 2048
    # The most input channels a weight file or input_shape may declare. Keras takes any count
    # (multispectral and hyperspectral models have tens to a few hundred bands); the bound keeps
    # a manifest from making a golden or a photo allocate more than a real model would.
    max_input_channels: int = 1024
    # A Keras model description (config.json, a legacy .h5's model_config): ~200 kB for a
    # Keras 3 Xception classifier. JSON inflates when parsed (``{},`` is 3 bytes of text, a
    # 64-byte dict; 40 MB of ``[],`` took 1.3 GB), so 8 MiB parse within ~200 MB.
    max_config_bytes: int = 8 * 1024**2
    # Names in one legacy .h5 ``weight_names`` list: a nested model's group lists all its
    # layers' weights (Xception's: 236); max_config_layers layers of up to 10 weights each.
    max_weight_names: int = 100_000
    # An .npz manifest is JSON: a few kB, or ~1 MB with ImageNet-21k labels.
    max_manifest_bytes: int = 16 * 1024**2
    # Entries in an .npz weight file's zip directory, checked before zipfile parses it: a
    # converted Xception holds ~240 arrays, a fine-tuned head and golden arrays a few dozen more.
    max_npz_entries: int = 2_000
    # Group members listed while reading one HDF5 file, all walks together, each checked
    # as a hard link (~0.35 ms). Xception saved after fit() with Adam (measured): a Keras 3
    # .weights.h5 holds 822 (~240 weights, 2 Adam slots each, groups) and converting it lists
    # 1,194; a tf_keras full-model .h5 holds 932 and lists 619. 8x the larger leaves room
    # for heads, nesting and other optimizers, and refuses
    # a file of 1,000,000 hard links (6 minutes to walk) within a few seconds.
    max_h5_listings: int = 10_000
    # Members of a .keras archive: config.json, metadata.json, model.weights.h5, and the
    # assets of layers that have some (none of Xception's do).
    max_keras_entries: int = 100


CONFIG = Config()
