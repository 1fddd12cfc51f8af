"""scaledet.nn: reusable transformer parts and generative-denoising maths.

In the layer of ``losses``, above ``ops`` and below ``models``: modules here import only torch,
numpy, the standard library and ``scaledet.ops``; the detectors in ``models`` assemble them.

- ``attention``: multi-head scaled dot-product attention with masks and RoPE hooks;
- ``rope``: rotary position embedding, 1-D and axial 2-D;
- ``linear_attention``: O(N) attention with the ``elu + 1`` kernel;
- ``gau``: the Gated Attention Unit of FLASH;
- ``activations``: squared ReLU, plain and gated (SwiGLU / GEGLU) feed-forward blocks;
- ``moe``: a top-k routed mixture of feed-forward experts with a load-balancing loss;
- ``diffusion``: DDPM noise schedules (linear, cosine), the DDIM update and sampler, and
  rectified-flow interpolation with an Euler sampler, for any tensor (boxes, images).
"""

from scaledet.nn.activations import (
    FFN_KINDS,
    FeedForward,
    GLUFeedForward,
    SquaredReLU,
    feed_forward,
    squared_relu,
)
from scaledet.nn.attention import MultiheadAttention
from scaledet.nn.diffusion import (
    FLOW_TIMES,
    NoiseSchedule,
    ddim_timesteps,
    euler_sample,
    flow_interpolate,
    flow_times,
)
from scaledet.nn.gau import GAU
from scaledet.nn.linear_attention import LinearAttention, elu_feature_map, linear_attention
from scaledet.nn.moe import MoEFeedForward
from scaledet.nn.rope import RotaryEmbedding1D, RotaryEmbedding2D, apply_rope

__all__ = [
    "FFN_KINDS",
    "FLOW_TIMES",
    "GAU",
    "FeedForward",
    "GLUFeedForward",
    "LinearAttention",
    "MoEFeedForward",
    "MultiheadAttention",
    "NoiseSchedule",
    "RotaryEmbedding1D",
    "RotaryEmbedding2D",
    "SquaredReLU",
    "apply_rope",
    "ddim_timesteps",
    "elu_feature_map",
    "euler_sample",
    "feed_forward",
    "flow_interpolate",
    "flow_times",
    "linear_attention",
    "squared_relu",
]
