"""Real architectures: keras-hub's backbones and the Keras Applications, built small and explained.

    python tools/zoo.py                  # build, compile and explain every row; print the tables
    python tools/zoo.py --write          # the same, then write tools/zoo_results.json and the README tables
    python tools/zoo.py --check          # exit 1 if README.md differs from zoo_results.json
    python tools/zoo.py --readme         # rewrite the README tables from zoo_results.json only
    python tools/zoo.py --only GPT2Backbone ResNet50   # rows starting with these names, printed as JSON
    python tools/zoo.py --write --all    # every application, not only the smallest of each family (hours)

*keras-hub* (``keras_hub.models.*Backbone``): each backbone class is built from its constructor
at a tiny configuration (``HUB``; no presets, no downloads), in float32 and float64 with the
same weights, with a head of 3 classes (pooled features, then ``Dense(3, softmax)``), and
explained against a small background. Token models are attributed at their token embedding
(or where the segment ids are summed in, at the sum: see the row's note); image models at the
pixels; audio models at the features. Inputs that are not explained (a text prompt beside an
image) are held fixed inside the model. A row is *supported* (with the additivity error
``max |Σφ + E[f(b)] − f(x)|`` of each dtype), *refused* (``UnsupportedOpError``, naming the op
types), *n/a* (the reason), *too slow* (the stage it was in when its time ran out), or *failed*
(any other error, quoted); a too-slow row keeps what it measured before its time ran out.

*Keras Applications*: every application of ``keras.applications`` and ``tf_keras.applications``
has a row; the smallest of each family (``DEFAULT_APPLICATIONS``) runs by default, with random
weights, 32×32 inputs where the model allows (its minimum otherwise), 10 classes,
BatchNormalization statistics calibrated on random batches (the running average of 4 batches'
statistics), explained in float32 and in float64 with the same weights. The others are deeper
or wider variants built from the same layers, listed as not run unless ``--all`` is given.

Workarounds for core gaps, easy to delete: an explicit ``batch_size`` where an input has a None
dimension (``explain``), BERT-like models attributed at the sum of their embeddings (their
segment ids feed a ``GatherV2`` beside the token embedding), and keras-hub layers that need a
static sequence length rebuilt with one (``Hub.static``).

Timings: ``compile`` is ``tfshap.compile``, ``first`` the first ``explain``, ``call`` the best of
two more; the floor's first call (:func:`tfshap.demo.plain_gradient_floor`, or the same work
from the attributed layer for token models) includes its tracing. A row is flagged where
compile + first explain exceeds 3× the floor's first call. Each row runs in a worker process
that is killed when the row's time (``ROW_SECONDS``) runs out; the next row gets a fresh one.

This file is loaded by path (``tests/test_zoo.py``); run as a script, its folder leaves ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfshap.testing import floatx  # noqa: E402

README = HERE.parent / "README.md"
RESULTS = HERE / "zoo_results.json"
HUB_BEGIN, HUB_END = "<!-- zoo-hub:start -->", "<!-- zoo-hub:end -->"
APPS_BEGIN, APPS_END = "<!-- zoo-applications:start -->", "<!-- zoo-applications:end -->"
KERASES = ("tf_keras", "keras3")
SUPPORTED, REFUSED, NOT_APPLICABLE, TOO_SLOW, FAILED = "supported", "refused", "n/a", "too slow", "failed"

#: Samples explained and background rows, for every row.
N_SAMPLES, N_BACKGROUND = 2, 4
#: Token models: sequence length and vocabulary.
SEQUENCE, VOCABULARY = 8, 50
HUB_CLASSES, APP_CLASSES = 3, 10
#: A row's wall-clock budget in its worker (both dtypes, timings and the floor included).
ROW_SECONDS = {"hub": 180, "applications": 200}
#: A float64 miss above this is no rounding (the float32 errors of these small models are near 1e-7): flagged.
INEXACT = 1e-5
#: The flag: tfshap's compile + first explain against the floor's first call.
FLAG_RATIO = 3.0
#: BatchNormalization calibration: batches of random images, averaged.
CALIBRATION_BATCHES, CALIBRATION_ROWS = 4, 8


# ---------------------------------------------------------------------------------------
# keras-hub: one spec per backbone class


@dataclass(frozen=True)
class Hub:
    """How to build one backbone small, and what to attribute to."""

    kind: str  # "tokens", "image", "audio" or "video"
    #: Constructor arguments, or ``dtype -> arguments`` where sub-models must be built first.
    kwargs: dict | Callable
    #: The layer whose output is attributed (token models); None: the explained model input.
    attributed: str | None = None
    #: The explained input (image, audio and video models), by the backbone's input name.
    explained: str | None = None
    #: Inputs held fixed inside the explained model (the same value for every row): a prompt beside an image.
    fixed: tuple = ()
    #: Shape (without the batch axis) of inputs the backbone leaves unknown, by name.
    shapes: dict = field(default_factory=dict)
    #: Values of fixed inputs, by name, where the generic ones do not fit (one row, no batch axis).
    values: dict = field(default_factory=dict)
    #: The backbone output the head is put on, where it is not the sequence or feature map.
    select: Callable | None = None
    #: Rebuilt with static sequence lengths (keras-hub's layer cannot be traced with an unknown one).
    static: bool = False
    note: str = ""
    #: Applied to the built model (float32; the float64 one copies its weights), e.g. to set a router.
    prepare: Callable | None = None


_SUM_NOTE = ("at the sum of the token, position and segment embeddings (`{layer}`): at `token_embedding` the "
             "segment ids, an integer input beside it, feed a `GatherV2` that tfshap refuses today")
_ONE_LAYER_NOTE = "at `{layer}`, one layer that embeds the tokens and adds the position embedding"
_TEXT_ONLY = "text only (`vision_encoder=None`)"
_DECODER_BESIDE = ("the head reads the decoder's output, and the decoder's token ids (an integer input beside the "
                   "attributed layer) are the same in every row")
_PROMPT_NOTE = "the pixels, with the {what} held fixed inside the model (the same for every row)"
_STATIC = (f"rebuilt with sequences of a static length ({SEQUENCE}): keras-hub's layer cannot be traced with an "
           "unknown one, which is how tfshap traces the backbone's own inputs")
_TOKENS = dict(vocabulary_size=VOCABULARY, num_layers=1, hidden_dim=16, intermediate_dim=32)
_DECODER = dict(_TOKENS, num_query_heads=2, num_key_value_heads=1)
_IMAGE = (32, 32, 3)


def _tokens(attributed="token_embedding", note="", static=False, prepare=None, **kwargs) -> Hub:
    if static:
        note = "; ".join(filter(None, [note, _STATIC]))
    return Hub("tokens", kwargs, attributed=attributed, note=note.format(layer=attributed), static=static,
               prepare=prepare)


#: The weights of the mixtures of experts' routers, by the end of their names.
_ROUTERS = ("sparse_feedforward_gate_dense/kernel", "router_dense/kernel", "router_dense/bias", "router_gate/kernel")
_ROUTED = ("its router's weights set to zero, so that every token goes to expert 0 in every row and a sample and its "
           "reference route alike (with random router weights the tokens of a sample and of a background row go to "
           "different experts, and explaining raises MaskMismatchError, as it must: a switch of experts has no "
           "exact DeepSHAP split)")


def _route_to_expert_0(model) -> None:
    """Zero every router weight: equal scores, and top-k takes the first expert for every token."""
    routers = [w for w in model.weights if w.path.endswith(_ROUTERS)]
    if not routers:
        raise ValueError("no router weights found: expected a name ending in one of " + ", ".join(_ROUTERS))
    for weight in routers:
        weight.assign(np.zeros(weight.shape, weight.dtype))


def _seq2seq(attributed: str, note: str, **kwargs) -> Hub:
    """An encoder-decoder: the head reads the decoder's output; the decoder's ids are the same in every row."""
    return Hub("tokens", kwargs, attributed=attributed, select=_decoder_output, note=f"{note}; {_DECODER_BESIDE}")


def _decoder_output(outputs):
    return outputs["decoder_sequence_output"]


_T5GEMMA = dict(
    vocabulary_size=VOCABULARY, encoder_hidden_dim=16, encoder_intermediate_dim=32, encoder_num_layers=1,
    encoder_num_attention_heads=2, encoder_num_key_value_heads=1, encoder_head_dim=8,
    encoder_layer_types=["full_attention"], decoder_hidden_dim=16, decoder_intermediate_dim=32, decoder_num_layers=1,
    decoder_num_attention_heads=2, decoder_num_key_value_heads=1, decoder_head_dim=8,
    decoder_layer_types=["full_attention"], dropout_rate=0.0, rms_norm_eps=1e-6, query_pre_attn_scalar=1.0,
    attention_bias=False, hidden_activation="gelu_approximate", sliding_window=16, cross_attention_hidden_size=16,
    attn_logit_softcapping=50.0, rope_max_wavelength=10000.0, initializer_range=0.04, attention_dropout=0.0,
)


def _image(explained="images", shape=_IMAGE, **kwargs) -> Hub:
    return Hub("image", dict(kwargs, image_shape=shape), explained=explained)


def _hub_class(name: str):
    """A keras-hub class by its public name, or from its module where keras_hub does not export it."""
    import importlib

    import keras_hub

    if hasattr(keras_hub.models, name):
        return getattr(keras_hub.models, name)
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(f"keras_hub.src.models.{module}"), attr)


def _resnet_kwargs(filters=(64, 16, 16, 16), image_shape=_IMAGE) -> dict:
    """A basic-block ResNet, one block per stage (keras-hub requires 64 filters in the first stage)."""
    return dict(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=list(filters),
                stackwise_num_blocks=[1] * len(filters), stackwise_num_strides=[1] + [2] * (len(filters) - 1),
                block_type="basic_block", image_shape=image_shape)


_MIT = dict(layerwise_depths=[1, 1], num_layers=2, hidden_dims=[8, 16], layerwise_num_heads=[1, 2],
            layerwise_sr_ratios=[4, 2], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2],
            image_shape=_IMAGE)


def _resnet(dtype, filters=(64, 16, 16, 16)):
    return _hub_class("ResNetBackbone")(**_resnet_kwargs(filters, (None, None, 3)), dtype=dtype)


def _sam3(dtype) -> dict:
    """The example in SAM3PromptableConceptBackbone's docstring, made smaller (56×56 images, 14×14 patches)."""
    import keras_hub

    L = keras_hub.layers
    small = dict(hidden_dim=16, intermediate_dim=32, num_heads=2, dtype=dtype)
    return dict(
        vision_encoder=L.SAM3VisionEncoder(image_shape=(56, 56, 3), patch_size=14, num_layers=1, fpn_hidden_dim=16,
                                           fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(28, 28, 3),
                                           window_size=2, global_attn_indexes=[0], **small),
        text_encoder=L.SAM3TextEncoder(vocabulary_size=VOCABULARY, embedding_dim=16, num_layers=1, **small),
        geometry_encoder=L.SAM3GeometryEncoder(num_layers=1, roi_size=7, **small),
        detr_encoder=L.SAM3DetrEncoder(num_layers=1, **small),
        detr_decoder=L.SAM3DetrDecoder(image_shape=(56, 56, 3), patch_size=14, num_layers=1, num_queries=5, **small),
        mask_decoder=L.SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=16, num_heads=2, dtype=dtype),
    )


def _sd3(dtype) -> dict:
    """keras-hub's SD3 test configuration, smaller: a 4-level VAE of 32 filters (its group norms take 32 groups), two
    small CLIP text encoders, a one-layer MMDiT."""
    vae = _hub_class("vae.vae_backbone.VAEBackbone")([32] * 4, [1] * 4, [32] * 4, [1] * 4, sampler_method="mode",
                                                    dtype=dtype, name="vae")
    text = _hub_class("CLIPTextEncoder")
    return dict(
        mmdit_patch_size=2, mmdit_hidden_dim=16, mmdit_num_layers=1, mmdit_num_heads=2, mmdit_position_size=32,
        mmdit_qk_norm=None, mmdit_dual_attention_indices=None, vae=vae,
        clip_l=text(VOCABULARY, 16, 16, 2, 2, 32, "quick_gelu", -2, dtype=dtype, name="clip_l"),
        clip_g=text(VOCABULARY, 16, 16, 2, 2, 32, "gelu", -2, dtype=dtype, name="clip_g"),
        image_shape=_IMAGE,
    )


def _clip_like(prefix: str, projection=True):
    """CLIP, MetaCLIP2 and SigLIP: a one-layer vision encoder and text encoder."""

    def kwargs(dtype):
        vision = _hub_class(f"{prefix}VisionEncoder")(8, 16, 1, 2, 32, image_shape=_IMAGE, dtype=dtype)
        text = _hub_class(f"{prefix}TextEncoder")(VOCABULARY, 16, 16, 1, 2, 32, max_sequence_length=SEQUENCE,
                                                  dtype=dtype)
        return dict(vision_encoder=vision, text_encoder=text, **({"projection_dim": 8} if projection else {}))

    return Hub("image", kwargs, explained="images", fixed=("token_ids",), select=_first_text_logit,
               note=_PROMPT_NOTE.format(what="text") + "; the head reads the image's logit against that text")


def _first_text_logit(outputs):
    """``vision_logits[:, :1]``: every row's similarity to the fixed text (all texts are the same)."""
    import keras

    return keras.ops.reshape(outputs["vision_logits"][:, :1], (-1, 1))


HUB: dict = {
    "Backbone": "the abstract base class of every backbone",
    "FeaturePyramidBackbone": "an abstract base class (image backbones that expose pyramid levels)",
    # token models
    "AlbertBackbone": _tokens("embeddings_add", _SUM_NOTE, vocabulary_size=VOCABULARY, num_layers=1, num_heads=2,
                              embedding_dim=8, hidden_dim=16, intermediate_dim=32, max_sequence_length=SEQUENCE),
    "BertBackbone": _tokens("embeddings_add", _SUM_NOTE, **_TOKENS, num_heads=2, max_sequence_length=SEQUENCE),
    "BloomBackbone": _tokens(**_TOKENS, num_heads=2),
    "DebertaV3Backbone": _tokens(**_TOKENS, num_heads=2, max_sequence_length=SEQUENCE, bucket_size=4),
    "DistilBertBackbone": _tokens("token_and_position_embedding", _ONE_LAYER_NOTE, **_TOKENS, num_heads=2,
                                  max_sequence_length=SEQUENCE),
    "ESMBackbone": _tokens(**_TOKENS, num_heads=2),
    "ESM2Backbone": _tokens(**_TOKENS, num_heads=2),
    "ElectraBackbone": _tokens("embeddings_add", _SUM_NOTE, vocab_size=VOCABULARY, num_layers=1, num_heads=2,
                               hidden_dim=16, embedding_dim=8, intermediate_dim=32, max_sequence_length=SEQUENCE),
    "FNetBackbone": _tokens("embeddings_add", _SUM_NOTE, **_TOKENS, max_sequence_length=SEQUENCE),
    "FalconBackbone": _tokens(**_TOKENS, num_attention_heads=2),
    "GPT2Backbone": _tokens(**_TOKENS, num_heads=2, max_sequence_length=SEQUENCE),
    "GPTNeoXBackbone": _tokens(**_TOKENS, num_heads=2, max_sequence_length=SEQUENCE),
    "GemmaBackbone": _tokens(**_DECODER, head_dim=8),
    "Gemma3Backbone": _tokens(note=_TEXT_ONLY, **_DECODER, head_dim=8, image_size=16, vision_encoder=None),
    "Gemma4Backbone": _tokens(note=_TEXT_ONLY, **_DECODER, head_dim=8, image_size=16, vision_encoder=None),
    "GptOssBackbone": _tokens(note=_ROUTED, prepare=_route_to_expert_0, **_DECODER, num_experts=2, top_k=1),
    "LlamaBackbone": _tokens(**_DECODER),
    "Llama3Backbone": _tokens(**_DECODER),
    "MistralBackbone": _tokens(**_DECODER),
    "MixtralBackbone": _tokens(note=_ROUTED, prepare=_route_to_expert_0, **_DECODER, num_experts=2, top_k=1),
    "OPTBackbone": _tokens("embeddings", _ONE_LAYER_NOTE, **_TOKENS, num_heads=2, max_sequence_length=SEQUENCE),
    "Phi3Backbone": _tokens(**_DECODER),
    "QwenBackbone": _tokens(**_DECODER),
    "QwenMoeBackbone": _tokens(note=_ROUTED, prepare=_route_to_expert_0, **_DECODER, moe_intermediate_dim=16,
                               shared_expert_intermediate_dim=16, num_experts=2, top_k=1),
    "Qwen3Backbone": _tokens(**_DECODER, head_dim=8),
    "Qwen3MoeBackbone": _tokens(note=_ROUTED, prepare=_route_to_expert_0, **_DECODER, moe_intermediate_dim=16,
                                num_experts=2, top_k=1, head_dim=8),
    "Qwen3_5Backbone": _tokens(static=True,
                               note="one linear-attention layer and one full-attention layer, " + _TEXT_ONLY,
                               **dict(_DECODER, num_layers=2), head_dim=8,
                               layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2,
                               linear_num_value_heads=2, linear_key_head_dim=4, linear_value_head_dim=4,
                               linear_conv_kernel_dim=4),
    "Qwen3_5MoeBackbone": _tokens(static=True, prepare=_route_to_expert_0,
                                  note="one linear-attention layer and one full-attention layer, " + _TEXT_ONLY + "; "
                                  + _ROUTED, **dict(_DECODER, num_layers=2), head_dim=8, moe_intermediate_dim=16,
                                  shared_expert_intermediate_size=16, num_experts=2, top_k=1,
                                  layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2,
                                  linear_num_value_heads=2, linear_key_head_dim=4, linear_value_head_dim=4,
                                  linear_conv_kernel_dim=4),
    "RWKV7Backbone": _tokens(static=True, vocabulary_size=VOCABULARY, hidden_size=16, head_size=8, num_layers=1,
                             intermediate_dim=32, gate_lora=8, mv_lora=8, aaa_lora=8, decay_lora=8),
    "RobertaBackbone": _tokens("embeddings", _ONE_LAYER_NOTE, **_TOKENS, num_heads=2, max_sequence_length=SEQUENCE),
    "RoformerV2Backbone": _tokens("embeddings_add", _SUM_NOTE.replace("position and ", ""), **_TOKENS,
                                  num_heads=2, head_size=8),
    "SmolLMBackbone": _tokens(vocabulary_size=VOCABULARY, hidden_dim=16, intermediate_dim=32, num_layers=1,
                              num_attention_heads=2, num_key_value_heads=1, attention_bias=False,
                              attention_dropout=0.0, rope_layer_enabled_list=[True], layer_types=["attention"],
                              mlp_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=32,
                              rope_theta=10000.0, partial_rotary_factor=1.0),
    "XLMRobertaBackbone": _tokens("embeddings", _ONE_LAYER_NOTE, **_TOKENS, num_heads=2,
                                  max_sequence_length=SEQUENCE),
    "XLNetBackbone": _tokens("content_query_embedding", "at `content_query_embedding`, XLNet's token embedding layer, "
                             "which returns two tensors (the word and the relative position embeddings)",
                             **_TOKENS, num_heads=2),
    "Qwen2Backbone": _tokens(**_DECODER),
    "SmolLM3Backbone": _tokens(vocabulary_size=VOCABULARY, hidden_dim=16, intermediate_dim=32, num_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, attention_bias=False,
                               attention_dropout=0.0, rope_layer_enabled_list=[True], layer_types=["attention"],
                               mlp_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=32,
                               rope_theta=10000.0, partial_rotary_factor=1.0),
    "Gemma3nBackbone": _tokens("multimodal_embedding_processor", "at `{layer}`, the layer that embeds the tokens; "
                               "text only (no vision or audio encoder config)", text_vocab_size=VOCABULARY,
                               text_hidden_size=8, num_hidden_layers=1, pad_token_id=0, num_attention_heads=1,
                               num_key_value_heads=1, head_dim=8, intermediate_size=[16],
                               hidden_activation="gelu_approximate", layer_types=["full_attention"], sliding_window=4,
                               rope_theta=10000.0, max_position_embeddings=SEQUENCE, vocab_size_per_layer_input=10,
                               hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1),
    # encoder-decoder token models: attributed at the encoder's embedding
    "BartBackbone": _seq2seq("encoder_embeddings_add", "at the encoder's token + position embeddings",
                             **_TOKENS, num_heads=2, max_sequence_length=SEQUENCE),
    "T5Backbone": _seq2seq("encoder_embedding_dropout", "after the encoder's token embedding (the embedding layer is "
                           "shared with the decoder; the dropout is the identity at inference)",
                           **_TOKENS, num_heads=2),
    "EdRecBackbone": _seq2seq("embedding", "at the token embedding shared by encoder and decoder (its first call, the "
                              "encoder's)", vocab_size=VOCABULARY, num_layers_enc=1, num_layers_dec=1, hidden_dim=16,
                              intermediate_dim=32, num_heads=2),
    "T5GemmaBackbone": _seq2seq("encoder_token_embedding", "at the encoder's token embedding", **_T5GEMMA),
    "T5Gemma2Backbone": _seq2seq("encoder_token_embedding", "at the encoder's token embedding", **_T5GEMMA),
    # vision
    "CSPNetBackbone": _image(None, stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
                             stackwise_strides=2, stackwise_num_filters=[8, 16], block_type="dark_block",
                             stage_type="csp", bottle_ratio=(0.5, 1.0), block_ratio=(1.0, 0.5),
                             expand_ratio=(2.0, 1.0), stem_padding="same", down_growth=True),
    "DINOV2Backbone": _image(patch_size=14, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
                             shape=(28, 28, 3)),
    "DINOV3Backbone": _image("pixel_values", patch_size=16, num_layers=1, hidden_dim=16, num_heads=2,
                             intermediate_dim=32),
    "DeiTBackbone": _image(patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32),
    "DenseNetBackbone": _image(None, stackwise_num_repeats=[1, 1], growth_rate=8),
    "EfficientNetBackbone": Hub("image", dict(
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.25], stackwise_strides=[1, 2],
        stackwise_block_types=["fused", "unfused"], stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False], width_coefficient=1.0, depth_coefficient=1.0, num_features=32,
        input_shape=_IMAGE)),
    "HGNetV2Backbone": _image(None, stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3]], depths=[1],
                              hidden_sizes=[16], embedding_size=8, apply_downsample=[False],
                              use_lightweight_conv_block=[False], hidden_act="relu", use_learnable_affine_block=True),
    "MiTBackbone": Hub("image", _MIT),
    "MobileNetBackbone": _image(None, stackwise_expansion=[[16], [32]], stackwise_num_blocks=[1, 1],
                                stackwise_num_filters=[[8], [16]], stackwise_kernel_size=[[3], [3]],
                                stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [0.25]],
                                stackwise_activation=[["relu"], ["hard_swish"], ["hard_swish"]],
                                stackwise_padding=[[1], [1]], output_num_filters=32, depthwise_filters=8,
                                depthwise_stride=2, depthwise_residual=False, last_layer_filter=32,
                                squeeze_and_excite=0.5, input_num_filters=8),
    "MobileNetV5Backbone": _image(None, stackwise_block_types=[["er"], ["uir"]], stackwise_num_blocks=[1, 1],
                                  stackwise_num_filters=[[8], [16]], stackwise_strides=[[2], [2]],
                                  stackwise_act_layers=[["relu"], ["relu"]], stackwise_exp_ratios=[[2.0], [2.0]],
                                  stackwise_se_ratios=[[0.0], [0.0]], stackwise_dw_kernel_sizes=[[0], [3]],
                                  stackwise_dw_start_kernel_sizes=[[0], [0]], stackwise_dw_end_kernel_sizes=[[0], [0]],
                                  stackwise_exp_kernel_sizes=[[3], [0]], stackwise_pw_kernel_sizes=[[1], [0]],
                                  stackwise_num_heads=[[0], [0]], stackwise_key_dims=[[0], [0]],
                                  stackwise_value_dims=[[0], [0]], stackwise_kv_strides=[[0], [0]],
                                  stackwise_use_cpe=[[False], [False]], stem_size=8, num_features=32, use_msfa=False),
    "ResNetBackbone": Hub("image", _resnet_kwargs()),
    "SwinTransformerBackbone": _image(None, embed_dim=16, depths=(2,), num_heads=(2,), window_size=4, patch_size=4),
    "VGGBackbone": _image(None, stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16]),
    "ViTBackbone": _image(patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32),
    "ViTDetBackbone": _image(None, hidden_size=16, num_layers=1, intermediate_dim=32, num_heads=2,
                             global_attention_layer_indices=[0], patch_size=4, num_output_channels=8, window_size=2),
    "XceptionBackbone": _image(None, stackwise_conv_filters=[[8, 16], [16, 16]], stackwise_pooling=[False, True]),
    "VideoPrismBackbone": Hub("video", dict(num_frames=2, patch_size=8, hidden_dim=16, intermediate_dim=32, num_heads=2,
                                            num_spatial_layers=1, num_temporal_layers=1, num_auxiliary_layers=0,
                                            image_shape=(16, 16, 3)), explained="pixel_values"),
    # vision models built on an image encoder
    "BASNetBackbone": Hub("image", lambda dtype: dict(image_encoder=_resnet(dtype), num_classes=1, image_shape=_IMAGE,
                                                      projection_filters=64)),
    "DeepLabV3Backbone": Hub("image", lambda dtype: dict(
        image_encoder=_resnet(dtype, (64, 16, 16)), low_level_feature_key="P2", spatial_pyramid_pooling_key="P4",
        dilation_rates=[2, 4], upsampling_size=4, projection_filters=8, image_shape=_IMAGE)),
    "RetinaNetBackbone": Hub("image", lambda dtype: dict(image_encoder=_resnet(dtype), min_level=3, max_level=4,
                                                         use_p5=True, image_shape=_IMAGE)),
    "SegFormerBackbone": Hub("image", lambda dtype: dict(
        image_encoder=_hub_class("MiTBackbone")(**_MIT, dtype=dtype), projection_filters=8)),
    "DepthAnythingBackbone": Hub("image", lambda dtype: dict(
        image_encoder=_hub_class("DINOV2Backbone")(14, 4, 16, 2, 32, 1.0, 0, image_shape=(126, 126, 3),
                                                   apply_layernorm=True, name="image_encoder", dtype=dtype),
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8, head_hidden_dim=8,
        head_in_index=-1, feature_keys=["stage1", "stage2", "stage3", "stage4"]), explained="images"),
    # image and text
    "CLIPBackbone": _clip_like("CLIP"),
    "MetaCLIP2Backbone": _clip_like("MetaCLIP2"),
    "SigLIPBackbone": _clip_like("SigLIP", projection=False),
    "PARSeqBackbone": Hub("image", lambda dtype: dict(
        image_encoder=_hub_class("ViTBackbone")(image_shape=(16, 32, 3), patch_size=(4, 8), num_layers=1, num_heads=2,
                                                hidden_dim=16, mlp_dim=32, use_class_token=False, dtype=dtype),
        vocabulary_size=VOCABULARY, max_label_length=4, decoder_hidden_dim=16, num_decoder_layers=1,
        num_decoder_heads=2, decoder_mlp_dim=32, dropout_rate=0.0, attention_dropout=0.0),
        explained="images", fixed=("token_ids", "padding_mask"), shapes={"token_ids": (5,), "padding_mask": (5,)},
        note=_PROMPT_NOTE.format(what="label tokens")),
    "PaliGemmaBackbone": Hub("image", dict(
        vocabulary_size=VOCABULARY, image_size=16, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=32, head_dim=8, vit_patch_size=8, vit_num_layers=1, vit_num_heads=2,
        vit_hidden_dim=16, vit_intermediate_dim=32), explained="images",
        fixed=("token_ids", "padding_mask", "response_mask"), note=_PROMPT_NOTE.format(what="text")),
    "BLIP2Backbone": Hub("image", lambda dtype: dict(
        vision_encoder=_hub_class("BLIP2VisionEncoder")(
            image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
            use_patch_bias=True, use_class_token=True, use_mha_bias=True, use_mlp_bias=True, dropout_rate=0.0,
            layer_norm_epsilon=1e-6, initializer_range=0.02, dtype=dtype),
        qformer=_hub_class("BLIP2QFormer")(
            num_query_tokens=2, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, vision_dim=16,
            cross_attention_frequency=1, dropout=0.0, layer_norm_epsilon=1e-6, dtype=dtype),
        language_model=_hub_class("BLIP2CustomOPT")(
            vocabulary_size=VOCABULARY, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
            num_query_tokens=2, qformer_hidden_dim=8, max_sequence_length=16, dropout=0.0, dtype=dtype)),
        explained="images", fixed=("token_ids", "padding_mask"), note=_PROMPT_NOTE.format(what="text")),
    "SAMBackbone": Hub("image", lambda dtype: dict(
        image_encoder=_hub_class("ViTDetBackbone")(
            hidden_size=16, num_layers=1, intermediate_dim=32, num_heads=2, global_attention_layer_indices=[0],
            patch_size=4, num_output_channels=8, window_size=2, image_shape=_IMAGE, dtype=dtype),
        prompt_encoder=_hub_class("sam.sam_prompt_encoder.SAMPromptEncoder")(
            hidden_size=8, image_embedding_size=(8, 8), input_image_size=(32, 32), mask_in_channels=16, dtype=dtype),
        mask_decoder=_hub_class("sam.sam_mask_decoder.SAMMaskDecoder")(
            num_layers=1, hidden_size=8, intermediate_dim=16, num_heads=2, embedding_dim=8, num_multimask_outputs=3,
            iou_head_depth=2, iou_head_hidden_dim=8, dtype=dtype)),
        explained="images", fixed=("points", "labels", "boxes", "masks"),
        values={"points": np.array([[8.0, 20.0]]), "labels": np.array([1.0]),
                "boxes": np.array([[[4.0, 4.0], [24.0, 28.0]]]), "masks": np.zeros((0, 32, 32, 1))},
        select=lambda outputs: outputs["image_embeddings"], note=_PROMPT_NOTE.format(what="point and box prompts") +
        "; the backbone outputs embeddings (the mask decoder runs in the segmenter task), and the head reads the "
        "image embeddings"),
    "DFineBackbone": Hub("image", lambda dtype: dict(
        backbone=_hub_class("HGNetV2Backbone")(
            stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
            apply_downsample=[False, True], use_lightweight_conv_block=[False, False], depths=[1, 1],
            hidden_sizes=[16, 32], embedding_size=8, use_learnable_affine_block=True, hidden_act="relu",
            image_shape=(None, None, 3), out_features=["stage1", "stage2"], dtype=dtype),
        decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=0, num_labels=4, hidden_dim=16,
        learn_initial_query=False, num_queries=4, anchor_image_size=(32, 32), feat_strides=[4, 8],
        num_feature_levels=2, encoder_in_channels=[16, 32], encode_proj_layers=[1], num_attention_heads=2,
        encoder_ffn_dim=32, num_encoder_layers=1, hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1,
        num_decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2],
        lqe_hidden_dim=8, num_lqe_layers=1, out_features=["stage1", "stage2"], image_shape=_IMAGE, seed=0),
        explained="pixel_values", select=lambda outputs: outputs["last_hidden_state"],
        note="the pixels; the head reads the decoder's query states"),
    "SAM3PromptableConceptBackbone": Hub("image", lambda dtype: _sam3(dtype), explained="pixel_values",
                                         fixed=("token_ids", "padding_mask", "boxes", "box_labels"),
                                         values={"boxes": np.zeros((1, 5)), "box_labels": np.zeros((1,), "int32")},
                                         note=_PROMPT_NOTE.format(what="text and box prompts") + "; keras-hub 0.32's "
                                         "`SAM3Attention` fails on batches of more than 2 rows in plain Keras too (a "
                                         "mask of shape [batch, 2] is broadcast against [batch, 2, 2, 2])"),
    "StableDiffusion3Backbone": Hub("image", lambda dtype: _sd3(dtype), explained="latents",
                                    fixed=("images", "clip_l_token_ids", "clip_l_negative_token_ids",
                                           "clip_g_token_ids", "clip_g_negative_token_ids", "num_steps",
                                           "guidance_scale"),
                                    values={"num_steps": np.array(2, "int32"), "guidance_scale": np.array(7.0)},
                                    select=lambda outputs: outputs["images"],
                                    note="the latents of one denoising step, decoded to an image, with the prompts "
                                         "and the step count held fixed inside the model"),
    "FluxBackbone": Hub("image", dict(input_channels=16, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1,
                                      depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10_000, use_bias=True,
                                      guidance_embed=True, image_shape=(8, 16), text_shape=(8, 16),
                                      image_ids_shape=(8, 3), text_ids_shape=(8, 3), y_shape=(16,)),
                        explained="image", fixed=("image_ids", "text", "text_ids", "y", "timesteps", "guidance"),
                        note="the image tokens (8 of 16 channels), with the text, ids, timestep and guidance held "
                             "fixed inside the model"),
    # audio
    "WhisperBackbone": Hub("audio", dict(_TOKENS, num_heads=2, num_mels=8, max_encoder_sequence_length=16,
                                         max_decoder_sequence_length=SEQUENCE),
                           explained="encoder_features", fixed=("decoder_token_ids", "decoder_padding_mask"),
                           shapes={"encoder_features": (16, 8)},
                           note="the log-mel features, with the decoder's tokens held fixed inside the model"),
    "MoonshineBackbone": Hub("audio", dict(vocabulary_size=VOCABULARY, filter_dim=16, encoder_num_layers=1,
                                           decoder_num_layers=1, hidden_dim=16, intermediate_dim=32,
                                           encoder_num_heads=2, decoder_num_heads=2),
                             explained="encoder_input_values", shapes={"encoder_input_values": (1600, 1),
                                                                        "encoder_padding_mask": (1600,)},
                             fixed=("encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"),
                             note="the raw waveform (1,600 samples), with the decoder's tokens held fixed"),
}



# ---------------------------------------------------------------------------------------
# building


def keras_module(name: str):
    if name == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras


def hub_classes() -> dict[str, type]:
    """Every ``keras_hub.models.*Backbone`` class (the abstract ``Backbone`` too, as an n/a row)."""
    import keras_hub

    names = sorted(name for name in dir(keras_hub.models) if name.endswith("Backbone"))
    return {name: getattr(keras_hub.models, name) for name in names}


def _input_name(tensor) -> str:
    return tensor.name.split(":")[0]


def _pool(K, tensor, dtype):
    """Features to one vector per row: global average over every axis between batch and channels."""
    if len(tensor.shape) == 2:
        return tensor
    axes = list(range(1, len(tensor.shape) - 1))
    return K.layers.Lambda(lambda t: K.ops.mean(t, axis=axes), name="zoo_pool", dtype=dtype)(tensor)


def _features(outputs):
    """The backbone output a head is put on: the sequence or feature map (the first of a dict or list)."""
    if isinstance(outputs, dict):
        for key in ("sequence_output", "encoder_sequence_output", "image_embeds", "vision_logits"):
            if key in outputs:
                return outputs[key]
        return outputs[min(outputs)]
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs


def hub_model(name: str, dtype: str):
    """The backbone ``name`` built small in ``dtype``, with a 3-class head, and the spec of its explanation."""
    import keras

    spec = HUB[name]
    kwargs = spec.kwargs(dtype) if callable(spec.kwargs) else dict(spec.kwargs)
    keras.utils.set_random_seed(0)
    with floatx(keras, dtype):  # the backbones' float Inputs take floatx
        backbone = hub_classes()[name](**kwargs, dtype=dtype)
        if spec.static:
            backbone = keras.models.clone_model(backbone, input_tensors={
                _input_name(t): keras.Input(_shape(spec, _input_name(t), t), dtype=t.dtype, name=_input_name(t))
                for t in backbone.inputs})
        if spec.fixed:
            inputs, outputs = _with_fixed_inputs(keras, backbone, spec, dtype)
        else:
            inputs, outputs = backbone.input, backbone.output
        features = spec.select(outputs) if spec.select else _features(outputs)
        head = keras.layers.Dense(HUB_CLASSES, activation="softmax", dtype=dtype, name="zoo_head")
        model = keras.Model(inputs, head(_pool(keras, features, dtype)))
    if spec.prepare is not None:
        spec.prepare(model)
    return model, spec


def _with_fixed_inputs(keras, backbone, spec: Hub, dtype: str):
    """The backbone called on its inputs but ``spec.fixed``, which are constants broadcast to the batch."""
    named = {_input_name(t): t for t in backbone.inputs}
    inputs = {key: keras.Input(t.shape[1:], dtype=t.dtype, name=key)
              for key, t in named.items() if key not in spec.fixed}
    first = next(iter(inputs.values()))
    feeds = dict(inputs)
    for key in spec.fixed:
        value = spec.values.get(key)
        if value is None:
            value = input_values(key, _shape(spec, key, named[key]), _dtype(named[key]), 1, np.random.default_rng(7))[0]
        feeds[key] = keras.layers.Lambda(
            lambda t, v=value: keras.ops.broadcast_to(keras.ops.convert_to_tensor(v),
                                                      (keras.ops.shape(t)[0], *v.shape)),
            name=f"zoo_fixed_{key}", dtype=dtype,
        )(first)
    return (first if len(inputs) == 1 else inputs), backbone(feeds)


def _shape(spec: Hub, name: str, tensor) -> tuple:
    return spec.shapes.get(name) or tuple(SEQUENCE if d is None else d for d in tensor.shape[1:])


def _dtype(tensor) -> np.dtype:
    return np.dtype(tensor.dtype if isinstance(tensor.dtype, str) else tensor.dtype.name)


def input_values(name: str, shape: tuple, dtype: np.dtype, n: int, rng) -> np.ndarray:
    """``n`` rows of an input by its name: all-ones masks, two segments, positions, token ids; floats in [0, 1]."""
    if np.issubdtype(dtype, np.integer) or np.dtype(dtype) == np.bool_:
        if "mask" in name:
            return np.ones((n, *shape), dtype)
        if "segment" in name:
            return np.broadcast_to((np.arange(shape[-1]) >= shape[-1] // 2).astype(dtype), (n, *shape)).copy()
        if "position" in name:
            return np.broadcast_to(np.arange(shape[-1]).astype(dtype), (n, *shape)).copy()
        if name.startswith("decoder_"):  # the same decoder prompt in every row
            prompt = np.random.default_rng(7).integers(1, VOCABULARY, shape).astype(dtype)
            return np.broadcast_to(prompt, (n, *shape)).copy()
        return rng.integers(1, VOCABULARY, (n, *shape)).astype(dtype)
    return rng.uniform(0.0, 1.0, (n, *shape)).astype(dtype)


def hub_data(model, spec: Hub, n: int, seed: int):
    """``n`` rows for every input of the explained model (one array where it has one input)."""
    rng = np.random.default_rng(seed)
    arrays = [input_values(_input_name(t), _shape(spec, _input_name(t), t), _dtype(t), n, rng) for t in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


# ---------------------------------------------------------------------------------------
# the Keras Applications

#: Applications run by default: the smallest member of each family. The others are deeper or wider variants
#: built from the same layers (``--all`` runs them too, for hours on 2 cores).
DEFAULT_APPLICATIONS = (
    "ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionResNetV2", "InceptionV3",
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "NASNetMobile", "RegNetX002", "RegNetY002", "ResNet50",
    "ResNet50V2", "ResNetRS50", "VGG16", "Xception",
)
NOT_RUN = "not run"

#: The smallest input side an application accepts where it is above 32.
MIN_SIDE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def application_names(keras_name: str) -> list[str]:
    applications = keras_module(keras_name).applications
    return sorted(name for name in dir(applications) if name[:1].isupper() and callable(getattr(applications, name)))


def side_of(name: str) -> int:
    return MIN_SIDE.get(name, 32)


def application_model(keras_name: str, name: str, dtype: str, source=None):
    """``name`` with random weights, 10 classes, its smallest square input from 32; ``source``'s weights if given."""
    K = keras_module(keras_name)
    side = side_of(name)
    with floatx(K, dtype):
        K.utils.set_random_seed(0)
        model = getattr(K.applications, name)(weights=None, input_shape=(side, side, 3), classes=APP_CLASSES)
    if source is not None:
        model.set_weights([np.asarray(w).astype(dtype) for w in source.get_weights()])
    return model


def calibrate(keras_name: str, model) -> int:
    """Set every BatchNormalization's moving statistics to the mean of a few random batches' statistics.

    Batch ``i`` (from 1) runs in training mode with momentum ``(i − 1)/i``, so after the last
    the moving mean and variance are the average over the batches, each layer normalized by
    the batch statistics as in training. Returns the number of layers calibrated.
    """
    K = keras_module(keras_name)
    from tfshap.trace import all_layers

    norms = [layer for layer in all_layers(model) if isinstance(layer, K.layers.BatchNormalization)]
    rng = np.random.default_rng(1)
    side = model.inputs[0].shape[1]
    for i in range(1, CALIBRATION_BATCHES + 1):
        for layer in norms:
            layer.momentum = (i - 1) / i
        model(rng.uniform(0.0, 1.0, (CALIBRATION_ROWS, side, side, 3)).astype("float32"), training=True)
    return len(norms)


def application_data(model, n: int, seed: int) -> np.ndarray:
    side = model.inputs[0].shape[1]
    dtype = np.dtype(model.inputs[0].dtype if isinstance(model.inputs[0].dtype, str) else model.inputs[0].dtype.name)
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, side, side, 3)).astype(dtype)


def _has_unknown_dims(model) -> bool:
    return any(d is None for t in model.inputs for d in t.shape[1:])


def explain(model, background, samples, attributed=None):
    """``(explainer, attributions, compile seconds, first explain seconds)``.

    Workaround until the core handles inputs with a None dimension (``batch_size`` takes
    ``int(None)``): such models get an explicit ``batch_size`` of every pair at once.
    """
    import tfshap

    batch_size = len(samples[0] if isinstance(samples, list) else samples) * N_BACKGROUND
    start = time.perf_counter()
    explainer = tfshap.compile(model, background, inputs=attributed,
                               batch_size=batch_size if _has_unknown_dims(model) else None)
    compiled = time.perf_counter()
    result = explainer.explain(samples)
    return explainer, result, compiled - start, time.perf_counter() - compiled


def best_call(explainer, samples, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        explainer.explain(samples)
        times.append(time.perf_counter() - start)
    return min(times)


def floor_first_call(model, background, samples, attributed, n_outputs: int) -> float:
    """Seconds of the plain-gradient floor's first call (tracing included), from the inputs or ``attributed``."""
    start = time.perf_counter()
    if attributed is None:
        from tfshap.demo import plain_gradient_floor

        plain_gradient_floor(model, n_outputs)(samples, background).numpy()
    else:
        layer_gradient_floor(model, attributed, n_outputs)(samples, background).numpy()
    return time.perf_counter() - start


def layer_gradient_floor(model, layer_name: str, n_outputs: int):
    """The floor's work from a layer: a forward pass over the 2·N·K paired rows of every input, and one
    ``tf.gradients`` per output with respect to the layer's output; returns gradient × Δ averaged over the
    background."""
    import keras
    import tensorflow as tf

    inner = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in model.inputs]

    @tf.function(input_signature=[specs, specs], autograph=False)
    def floor(xs, backgrounds):
        n, k = tf.shape(xs[0])[0], tf.shape(backgrounds[0])[0]
        rows = []
        for x, b in zip(xs, backgrounds):
            reps = tf.concat([[n], tf.ones([tf.rank(b) - 1], tf.int32)], 0)
            rows.append(tf.concat([tf.repeat(x, k, axis=0), tf.tile(b, reps)], 0))
        embedded, y = inner(rows, training=False)
        y = tf.reshape(y, [2 * n * k, -1])
        delta = embedded[: n * k] - embedded[n * k :]
        per_output = [tf.gradients(y[:, j], embedded)[0][: n * k] * delta for j in range(n_outputs)]
        shape = tf.concat([[n, k], tf.shape(per_output[0])[1:], [-1]], 0)
        return tf.reduce_mean(tf.reshape(tf.stack(per_output, -1), shape), 1)

    as_list = lambda arrays: list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]  # noqa: E731
    return lambda samples, background: floor(as_list(samples), as_list(background))


def _seconds(value: float) -> float:
    return round(value, 2 if value < 1 else 1)


def _error(value: float) -> float:
    return float(f"{value:.3g}")


def _failure(error: BaseException) -> str:
    """The error's type and its telling line (TensorFlow's op errors put it last, Keras's layer errors second)."""
    text = re.sub(r"\x1b\[[0-9;]*m|\{\{function_node [^}]*\}\}", "", str(error))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        lines = [line for line in lines if not line.startswith("[[")][-1:]
    elif len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        lines = [f"{lines[0]} {lines[1]}"]
    return f"{type(error).__name__}: {(lines or [''])[0][:240]}"


def measure(build, data, attributed, *, floor: bool, timed: bool = True, report=lambda stage, row: None) -> dict:
    """Explain the float32 model with timings (and the floor's first call), then the float64 one: a row.

    ``timed=False`` (the tests' re-check): the statuses and errors only, no timing calls and no floor.
    """
    import tfshap

    report("building float32", {})
    model = build("float32", None)
    background, samples = data(model, N_BACKGROUND, 0), data(model, N_SAMPLES, 1)
    report("compiling float32", {})
    try:
        explainer, result, compile_s, first_s = explain(model, background, samples, attributed)
    except tfshap.UnsupportedOpError as error:
        return {"status": REFUSED, "ops": error.op_types}
    if explainer.n_outputs != n_classes(model):
        raise ValueError(f"tfshap explains {explainer.n_outputs} outputs, not the head's {n_classes(model)}")
    row = {"status": SUPPORTED, "float32": _error(result.additivity_error)}
    if timed:
        report("timing float32 calls", row)
        row.update(compile_s=_seconds(compile_s), first_s=_seconds(first_s),
                   call_s=_seconds(best_call(explainer, samples)))
    if floor and timed:
        report("the floor's first call", row)
        try:
            floor_first_s = floor_first_call(model, background, samples, attributed, explainer.n_outputs)
            row["floor_first_s"] = _seconds(floor_first_s)
        except Exception as error:  # noqa: BLE001 - the row says why the floor is missing
            row["floor_note"] = f"the plain gradient fails ({_failure(error)})"
    report("float64", row)
    row.update(float64_part(build, data, attributed, model))
    return row


def float64_part(build, data, attributed, model32) -> dict:
    """``{"float64": error}`` with ``model32``'s weights, or ``{"float64_note": why there is none}``."""
    import tfshap

    try:
        model = build("float64", model32)
    except Exception as error:  # noqa: BLE001 - the row says why float64 is missing
        return {"float64_note": f"does not build in float64 ({_failure(error)})"}
    try:
        explainer, result, _, _ = explain(model, data(model, N_BACKGROUND, 0), data(model, N_SAMPLES, 1), attributed)
    except tfshap.UnsupportedOpError as error:
        return {"float64_note": "refused in float64: " + ", ".join(error.op_types)}
    except Exception as error:  # noqa: BLE001
        return {"float64_note": f"fails in float64 ({_failure(error)})"}
    row = {"float64": _error(result.additivity_error)}
    if explainer.compute_dtype.name != "float64":
        row["float64_note"] = f"the float64 build computes parts in {explainer.compute_dtype.name}"
    return row


def n_classes(model) -> int:
    return int(model.outputs[0].shape[-1])


def hub_row(name: str, report=lambda stage, row: None, timed: bool = True) -> dict:
    """One backbone's row: what is attributed, then its status and numbers (a failure is recorded, not raised)."""
    spec = HUB.get(name)
    if isinstance(spec, str):
        return {"status": NOT_APPLICABLE, "reason": spec}
    info = {"kind": spec.kind, "attributed": spec.attributed or spec.explained,
            **({"note": spec.note} if spec.note else {})}

    def build(dtype, source):
        model, _ = hub_model(name, dtype)
        if source is not None:
            model.set_weights([np.asarray(w).astype(dtype) for w in source.get_weights()])
        return model

    try:
        row = measure(build, lambda m, n, seed: hub_data(m, spec, n, seed), spec.attributed, floor=True, timed=timed,
                      report=lambda stage, partial: report(stage, {**info, **partial}))
    except Exception as error:  # noqa: BLE001 - the row records what went wrong
        row = {"status": FAILED, "error": _failure(error)}
    return {**info, **row}


def application_row(keras_name: str, name: str, report=lambda stage, row: None, timed: bool = True) -> dict:
    def build(dtype, source):
        model = application_model(keras_name, name, dtype, source)
        if source is None:
            calibrate(keras_name, model)
        return model

    side = {"side": side_of(name)}
    return {**side, **measure(build, application_data, None, floor=False, timed=timed,
                              report=lambda stage, partial: report(stage, {**side, **partial}))}


def row_result(table: str, name: str, keras_name: str | None = None, report=lambda stage, row: None) -> dict:
    """One row, its failures included (never raises)."""
    try:
        return hub_row(name, report) if table == "hub" else application_row(keras_name, name, report)
    except Exception as error:  # noqa: BLE001 - the row records what went wrong
        return {"status": FAILED, "error": _failure(error)}


# ---------------------------------------------------------------------------------------
# the worker: one process runs rows until one runs out of time


_RESULT, _STAGE = "ZOO-RESULT ", "ZOO-STAGE "


def worker() -> int:
    """Read ``[table, name, keras]`` lines on stdin; answer each with its stages and its row on stdout."""
    for line in sys.stdin:
        table, name, keras_name = json.loads(line)
        row = row_result(table, name, keras_name,
                         report=lambda stage, partial: print(_STAGE + json.dumps([stage, partial]), flush=True))
        print(_RESULT + json.dumps(row), flush=True)
    return 0


class Worker:
    """``python tools/zoo.py --worker``, restarted after a row that runs out of time."""

    def __init__(self):
        self.process = None

    def run(self, table: str, name: str, keras_name: str | None, seconds: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])},
            )
        self.process.stdin.write(json.dumps([table, name, keras_name]) + "\n")
        self.process.stdin.flush()
        deadline, stage, partial = time.monotonic() + seconds, "starting", {}
        while True:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # what the row measured so far, marked too slow
                self.stop()
                return {**partial, "status": TOO_SLOW, "reason": f"not done within {seconds:.0f} s on this machine "
                                                                  f"(while {stage})"}
            line = self.process.stdout.readline()
            if not line:
                self.stop()
                return {**partial, "status": FAILED, "error": f"the worker process died (while {stage})"}
            if line.startswith(_STAGE):
                stage, partial = json.loads(line[len(_STAGE):])
            elif line.startswith(_RESULT):
                return json.loads(line[len(_RESULT):])

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def all_rows() -> list[tuple[str, str, str | None]]:
    """``(table, name, keras)`` for every row: each keras-hub backbone class, each application in each Keras."""
    rows = [("hub", name, None) for name in hub_classes()]
    rows += [("applications", name, k) for k in KERASES for name in application_names(k)]
    return rows


def compute(only=None, every_application=False) -> dict:
    results: dict = {"hub": {}, "applications": {k: {} for k in KERASES}}
    runner = Worker()
    try:
        for table, name, keras_name in all_rows():
            if only and not any(name.startswith(o) for o in only):
                continue
            spec = HUB.get(name) if table == "hub" else None
            if table == "hub" and spec is None:
                row = {"status": FAILED, "error": "no spec in tools/zoo.py HUB"}
            elif isinstance(spec, str):
                row = {"status": NOT_APPLICABLE, "reason": spec}
            elif table == "applications" and not (every_application or only or name in DEFAULT_APPLICATIONS):
                row = {"status": NOT_RUN}
            else:
                start = time.perf_counter()
                row = runner.run(table, name, keras_name, ROW_SECONDS[table])
                row["row_s"] = _seconds(time.perf_counter() - start)
            (results["hub"] if table == "hub" else results["applications"][keras_name])[name] = row
            print(f"{table:12} {keras_name or '':8} {name:28} {row}", file=sys.stderr, flush=True)
    finally:
        runner.stop()
    return results


def machine() -> str:
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import keras_hub

        hub = f", keras-hub {keras_hub.__version__}"
    except ImportError:
        hub = ""
    return f"{os.cpu_count()} CPU cores ({cpu}), TensorFlow {tf.__version__}, Keras {keras.__version__}{hub}"


# ---------------------------------------------------------------------------------------
# the README tables


def _short(text: str) -> str:
    """An error's first sentence (two where the first only names the Keras layer that raised it)."""
    sentences = re.split(r"(?<=\.) (?=[A-Z])", text)
    keep = 2 if sentences[0].endswith(".call().") else 1
    short = " ".join(sentences[:keep])
    return short + ")" * (short.count("(") - short.count(")"))


def _status_cell(row: dict) -> str:
    status = row["status"]
    if status == REFUSED:
        return "refused: " + ", ".join(f"`{op}`" for op in row["ops"])
    if status in (NOT_APPLICABLE, TOO_SLOW):
        return f"{status}: {row['reason']}"
    if status == FAILED:
        return f"failed: {_short(row['error'])}"
    return SUPPORTED


def _float64_cell(row: dict) -> str:
    """The float64 error (in bold, "not exact", above ``INEXACT``), with its note; or why there is none."""
    if "float64" not in row:
        return _short(row.get("float64_note", "—"))
    cell = f"**{row['float64']:.1e}** (not exact)" if row["float64"] > INEXACT else f"{row['float64']:.1e}"
    note = row.get("float64_note", "").replace("the float64 build computes ", "")
    return f"{cell} ({note})" if note else cell


def _timing_cells(row: dict) -> list[str]:
    if "call_s" not in row:
        return ["—", "—"]
    return [f"{row['compile_s']:g} + {row['first_s']:g} s", f"{row['call_s']:g} s"]


def _floor_cells(row: dict) -> list[str]:
    if "floor_first_s" not in row or "call_s" not in row:
        return [row.get("floor_note", "—"), "—"]
    ratio = (row["compile_s"] + row["first_s"]) / row["floor_first_s"]
    flag = f"**{ratio:.1f}×** (> {FLAG_RATIO:g}×)" if ratio > FLAG_RATIO else f"{ratio:.1f}×"
    return [f"{row['floor_first_s']:g} s", flag]


def _errors(row: dict) -> list[str]:
    if "float32" not in row:
        return ["—", "—"]
    return [f"{row['float32']:.1e}", _float64_cell(row)]


def render_hub(results: dict) -> str:
    rows, notes = results["hub"], {}
    lines = [
        ("| backbone | attributed at | status | float32 error | float64 error | compile + first explain | per call "
         "| floor's first call | ratio |"),
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in sorted(rows, key=str.lower):
        row = rows[name]
        where = f"`{row['attributed']}`" if row.get("attributed") else _INPUT_WORD.get(row.get("kind"), "—")
        if row.get("note"):
            number = notes.setdefault(row["note"], len(notes) + 1)
            where += f" ({number})"
        cells = [f"`{name}`", where, _status_cell(row), *_errors(row), *_timing_cells(row), *_floor_cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"({number}) {note}." for note, number in notes.items()]
    lines.append("")
    lines.append(_summary(rows.values()) + f" {results['workload_hub']}")
    return "\n".join(lines)


def render_applications(results: dict) -> str:
    tables = results["applications"]
    lines = [
        "| application | Keras | input | status | float32 error | float64 error | compile + first explain | per call |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    names = sorted({name for rows in tables.values() for name in rows}, key=str.lower)
    for name in names:
        for keras_name in KERASES:
            row = tables[keras_name].get(name)
            if row is None or row["status"] == NOT_RUN:
                continue
            side = row.get("side", "")
            cells = [f"`{name}`", _KERAS_LABEL[keras_name], f"{side}×{side}",
                     _status_cell(row), *_errors(row), *_timing_cells(row)]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    summary = _summary(row for rows in tables.values() for row in rows.values())
    lines.append(summary + f" {results['workload_applications']}")
    not_run = {k: [name for name, row in sorted(rows.items()) if row["status"] == NOT_RUN]
               for k, rows in tables.items()}
    if any(not_run.values()):
        lines.append("")
        lines.append("Not run by default, as deeper or wider variants of a family above, built from the same layers "
                     "(`python tools/zoo.py --write --all` runs them, for hours on 2 cores): "
                     + "; ".join(f"{_KERAS_LABEL[k]}: " + ", ".join(f"`{n}`" for n in names)
                                 for k, names in not_run.items() if names) + ".")
    return "\n".join(lines)


_KERAS_LABEL = {"tf_keras": "tf_keras", "keras3": "keras 3"}
_INPUT_WORD = {"image": "pixels", "video": "pixels", "audio": "features"}


def _summary(rows) -> str:
    rows = list(rows)
    statuses = (SUPPORTED, REFUSED, NOT_APPLICABLE, TOO_SLOW, FAILED, NOT_RUN)
    counts = {s: sum(r["status"] == s for r in rows) for s in statuses}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "."


def _replace(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{README}: the markers {begin} and {end} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def updated_readme(text: str, results: dict) -> str:
    footer = (f"\n\nTimings from one run of `{results['command']}` ({results['minutes']:g} minutes)"
              f" on {results['machine']}.")
    text = _replace(text, HUB_BEGIN, HUB_END, render_hub(results) + footer)
    return _replace(text, APPS_BEGIN, APPS_END, render_applications(results) + footer)


def load_results() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="keras-hub backbones and Keras Applications, explained with tfshap.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write tools/zoo_results.json and the README tables")
    group.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the results file")
    group.add_argument("--readme", action="store_true", help="rewrite the README tables from the results file only")
    group.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="rows starting with these names (printed as JSON, nothing written)")
    parser.add_argument("--all", action="store_true", help="every application, not only the smallest of each family")
    args = parser.parse_args(argv)
    if args.worker:
        return worker()
    if args.readme:
        README.write_text(updated_readme(README.read_text(encoding="utf-8"), load_results()), encoding="utf-8")
        return 0
    if args.check:
        text = README.read_text(encoding="utf-8")
        if updated_readme(text, load_results()) != text:
            print(f"{README.name} is out of date: run python tools/zoo.py --write", file=sys.stderr)
            return 1
        print(f"{README.name} is up to date")
        return 0
    start = time.perf_counter()
    results = compute(only=args.only, every_application=args.all)
    if args.only:
        print(json.dumps(results, indent=1))
        return 0
    results.update(
        command="python tools/zoo.py --write" + (" --all" if args.all else ""),
        minutes=round((time.perf_counter() - start) / 60, 1), machine=machine(),
        workload_hub=WORKLOAD_HUB, workload_applications=WORKLOAD_APPLICATIONS,
    )
    if not args.write:
        print(render_hub(results) + "\n\n" + render_applications(results))
        return 0
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    README.write_text(updated_readme(README.read_text(encoding="utf-8"), results), encoding="utf-8")
    print(f"wrote {RESULTS} and the tables in {README}")
    return 0


WORKLOAD_HUB = (
    f"Each backbone at one layer, hidden size 16 (images 32×32, sequences of {SEQUENCE} tokens from a vocabulary of "
    f"{VOCABULARY}), with a head of {HUB_CLASSES} classes; {N_SAMPLES} samples explained against {N_BACKGROUND} "
    "background rows. The errors are max |Σφ + E[f(b)] − f(x)| over the samples and outputs (softmax probabilities), "
    "with the same weights in float32 and float64. The floor's first call is a plain gradient of the same pairs "
    "(tracing included); the ratio is tfshap's compile + first explain over it."
)
WORKLOAD_APPLICATIONS = (
    f"Random weights, {APP_CLASSES} classes (softmax), BatchNormalization statistics calibrated on "
    f"{CALIBRATION_BATCHES} random batches; {N_SAMPLES} samples explained against {N_BACKGROUND} background rows "
    "(pixels uniform in [0, 1]), in float32 and float64 with the same weights."
)


if __name__ == "__main__":
    sys.exit(main())
