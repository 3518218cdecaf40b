"""Keras layer classes known NOT to be identities at inference, with the reason.

``--skip-layer NAME`` is the user's word that a layer the converter does not
know returns its input unchanged at inference (a custom augmentation layer).
For the classes below that word is wrong, whatever the user believes: dropping
one changes the answer silently (a ``Softmax`` skipped returns logits). They are
refused by name, and a refusal never suggests ``--skip-layer`` for them.

The catalogue is Keras' own (keras.io/api/layers, the same classes in tf_keras).
The identities at inference are the other side of it:
:data:`weights_tools.preprocessing.IDENTITY` (Dropout family, GaussianNoise,
GaussianDropout, ActivityRegularization, Random* augmentation). ``Lambda`` and
custom classes are on neither side: only the user knows what they compute.
"""

from __future__ import annotations

_REASONS = {
    "it computes an activation of its input": (
        "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax"),
    "it has weights or a learned transform": (
        "Dense", "EinsumDense", "Embedding", "Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D",
        "Convolution3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "SeparableConv1D",
        "SeparableConv2D", "SeparableConvolution2D", "DepthwiseConv1D", "DepthwiseConv2D", "LSTM", "GRU",
        "SimpleRNN", "Bidirectional", "ConvLSTM2D", "MultiHeadAttention", "TimeDistributed"),
    "it normalises its input": (
        "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
        "RMSNormalization", "SpectralNormalization", "Normalization"),
    "it pools, changing the shape and the values": (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "MaxPool1D", "MaxPool2D", "MaxPool3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalAvgPool2D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalMaxPool2D"),
    "it changes the tensor's shape": (
        "Flatten", "Reshape", "Permute", "RepeatVector", "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D"),
    "it combines several inputs": (
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot", "Attention",
        "AdditiveAttention"),
    "it preprocesses at inference too": (
        "Rescaling", "Resizing", "CenterCrop", "RandomCrop", "Masking", "Discretization", "CategoryEncoding",
        "Hashing", "StringLookup", "IntegerLookup", "TextVectorization", "AutoContrast", "Equalization"),
}
NOT_IDENTITY = {cls: why for why, classes in _REASONS.items() for cls in classes}


def not_identity_reason(class_name: str) -> str | None:
    """Why a Keras class is not an identity at inference, or None for a class we do not know as one."""
    return NOT_IDENTITY.get(class_name)
