"""The article's Xception, written exactly as the article in ../shared/seed builds it.

This is the TensorFlow model that ``variant="article"`` is checked against. The
code is the article's, reformatted (its listing lost its whitespace) and with
``keras`` in place of ``tensorflow.keras`` so that it runs on Keras 3; the layer
calls, arguments and their order are unchanged. Test-only: npxception never
imports TensorFlow.
"""

from __future__ import annotations


def build_article_xception(input_shape=(299, 299, 3), keras=None):
    """The article's model in ``keras`` (the module: Keras 3 by default, or ``tf_keras``, the
    ``tensorflow.keras`` the article imports)."""
    if keras is None:
        import keras
    L = keras.layers
    Add, BatchNormalization, Conv2D, Dense = L.Add, L.BatchNormalization, L.Conv2D, L.Dense
    GlobalAvgPool2D, Input, MaxPool2D, ReLU, SeparableConv2D = (L.GlobalAvgPool2D, L.Input, L.MaxPool2D, L.ReLU,
                                                                L.SeparableConv2D)
    Model = keras.Model

    # creating the Conv-Batch Norm block
    def conv_bn(x, filters, kernel_size, strides=1):
        x = Conv2D(filters=filters, kernel_size=kernel_size, strides=strides,
                   padding="same", use_bias=False)(x)
        x = BatchNormalization()(x)
        return x

    # creating separableConv-Batch Norm block
    def sep_bn(x, filters, kernel_size, strides=1):
        x = SeparableConv2D(filters=filters, kernel_size=kernel_size, strides=strides,
                            padding="same", use_bias=False)(x)
        x = BatchNormalization()(x)
        return x

    # entry flow
    def entry_flow(x):
        x = conv_bn(x, filters=32, kernel_size=3, strides=2)
        x = ReLU()(x)
        x = conv_bn(x, filters=64, kernel_size=3, strides=1)
        tensor = ReLU()(x)

        x = sep_bn(tensor, filters=128, kernel_size=3)
        x = ReLU()(x)
        x = sep_bn(x, filters=128, kernel_size=3)
        x = MaxPool2D(pool_size=3, strides=2, padding="same")(x)

        tensor = conv_bn(tensor, filters=128, kernel_size=1, strides=2)
        x = Add()([tensor, x])

        x = ReLU()(x)
        x = sep_bn(x, filters=256, kernel_size=3)
        x = ReLU()(x)
        x = sep_bn(x, filters=256, kernel_size=3)
        x = MaxPool2D(pool_size=3, strides=2, padding="same")(x)

        tensor = conv_bn(tensor, filters=256, kernel_size=1, strides=2)
        x = Add()([tensor, x])

        x = ReLU()(x)
        x = sep_bn(x, filters=728, kernel_size=3)
        x = ReLU()(x)
        x = sep_bn(x, filters=728, kernel_size=3)
        x = MaxPool2D(pool_size=3, strides=2, padding="same")(x)

        tensor = conv_bn(tensor, filters=728, kernel_size=1, strides=2)
        x = Add()([tensor, x])
        return x

    # middle flow
    def middle_flow(tensor):
        for _ in range(8):
            x = ReLU()(tensor)
            x = sep_bn(x, filters=728, kernel_size=3)
            x = ReLU()(x)
            x = sep_bn(x, filters=728, kernel_size=3)
            x = ReLU()(x)
            x = sep_bn(x, filters=728, kernel_size=3)
            x = ReLU()(x)
            tensor = Add()([tensor, x])
        return tensor

    # exit flow
    def exit_flow(tensor):
        x = ReLU()(tensor)
        x = sep_bn(x, filters=728, kernel_size=3)
        x = ReLU()(x)
        x = sep_bn(x, filters=1024, kernel_size=3)
        x = MaxPool2D(pool_size=3, strides=2, padding="same")(x)

        tensor = conv_bn(tensor, filters=1024, kernel_size=1, strides=2)
        x = Add()([tensor, x])

        x = sep_bn(x, filters=1536, kernel_size=3)
        x = ReLU()(x)
        x = sep_bn(x, filters=2048, kernel_size=3)
        x = GlobalAvgPool2D()(x)
        x = Dense(units=1000, activation="softmax")(x)
        return x

    # model code
    input = Input(shape=input_shape)
    x = entry_flow(input)
    x = middle_flow(x)
    output = exit_flow(x)
    model = Model(inputs=input, outputs=output)
    return model
