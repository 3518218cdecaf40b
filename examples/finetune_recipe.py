"""Fine-tune Xception the keras.io way, then save the model as a real project would.

The recipe of https://keras.io/guides/transfer_learning/ ("an end-to-end
example: fine-tuning an image classification model"): random flips and
rotations, ``Rescaling(1/127.5, offset=-1)`` inside the model, the Xception
backbone frozen and called with ``training=False``, global average pooling,
dropout and a one-logit ``Dense``, trained with ``fit()``.

    python examples/finetune_recipe.py                   # offline demo: writes recipe.keras
    python examples/finetune_recipe.py photos/ --imagenet --size 150 --epochs 2

``photos/`` holds one folder per class (``image_dataset_from_directory``'s
layout). Without it, the demo trains one step on the two photos in
``examples/`` (cat vs. not cat) with a randomly initialised backbone, so that
it runs anywhere in seconds; ``--imagenet`` starts from the ImageNet weights,
which Keras downloads once. Then, without TensorFlow (docs/keras-recipe.md)::

    npxception convert recipe.keras -o recipe.npz
    npxception predict --weights recipe.npz examples/chelsea.png
    npxception compare --against recipe.keras --image examples/chelsea.png
"""

from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(size: int, imagenet: bool):
    import keras

    data_augmentation = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)], name="data_augmentation")
    base_model = keras.applications.Xception(weights="imagenet" if imagenet else None,
                                             input_shape=(size, size, 3), include_top=False)
    base_model.trainable = False
    inputs = keras.Input(shape=(size, size, 3))  # raw pixels in [0, 255]
    x = data_augmentation(inputs)
    x = keras.layers.Rescaling(scale=1 / 127.5, offset=-1)(x)  # Xception's [-1, 1], inside the model
    x = base_model(x, training=False)  # BatchNormalization stays in inference mode
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)  # a logit: > 0 means label 1, the second class folder by name
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy()])
    return model


def demo_data(size: int):
    """The two example photos: the cat is class 1, the coffee class 0."""
    import keras
    import numpy as np

    here = pathlib.Path(__file__).resolve().parent
    images = np.stack([keras.utils.img_to_array(keras.utils.load_img(here / name, target_size=(size, size)))
                       for name in ("chelsea.png", "coffee.png")])
    return images, np.array([[1.0], [0.0]])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("photos", nargs="?", help="a folder with one sub-folder of images per class")
    p.add_argument("--imagenet", action="store_true", help="start from the ImageNet weights (downloads once)")
    p.add_argument("--size", type=int, default=71, help="input size (Keras' minimum is 71)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("-o", "--output", default="recipe.keras")
    args = p.parse_args(argv)

    import keras

    model = build(args.size, args.imagenet)
    if args.photos:
        train = keras.utils.image_dataset_from_directory(args.photos, image_size=(args.size, args.size),
                                                         label_mode="binary", batch_size=32)
        model.fit(train, epochs=args.epochs)
    else:
        images, labels = demo_data(args.size)
        model.fit(images, labels, epochs=args.epochs, batch_size=2, verbose=0)
    model.save(args.output)  # the optimizer state goes in too, as in every trained model
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
