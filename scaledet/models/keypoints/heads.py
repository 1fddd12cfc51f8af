"""Top-down pose heads on a backbone's last feature map of a person crop.

- :class:`HeatmapHead` (SimpleBaseline, Xiao et al., ECCV 2018): upsample the features
  (transposed convolutions or bilinear + conv) and predict one heatmap per joint, trained with
  the weighted MSE against Gaussian targets and decoded by arg-max + quarter offset or DARK
  (:mod:`scaledet.models.keypoints.decode`).
- :class:`RLEHead` (Li et al., ICCV 2021): global average pooling and linear layers to each
  joint's position ``mu`` and scale ``sigma``, trained with the RLE negative log-likelihood
  (:func:`scaledet.losses.keypoints.rle_loss`). The RealNVP flow of that loss is a submodule of
  the head (its weights are saved with the model) but only :meth:`RLEHead.loss` uses it:
  ``forward`` never runs it, so inference and export cost exactly the pooling and two linears.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaledet.losses.keypoints import gaussian_heatmaps, heatmap_loss, rle_loss
from scaledet.models.keypoints.decode import decode_argmax, decode_dark
from scaledet.models.keypoints.flow import RealNVP
from scaledet.models.layers import ConvBNAct, init_weights, make_act, make_norm


class HeatmapHead(nn.Module):
    """Joint heatmaps from a ``(B, C, h, w)`` feature map.

    Args:
        in_channels: ``C``.
        num_keypoints: ``K`` (17 for COCO).
        channels: width of the upsampling layers (SimpleBaseline: 256).
        num_upsample: ``2x`` upsampling steps (SimpleBaseline: 3 from stride 32 to stride 4;
            0 for a backbone that already ends at the heatmap stride, as HRNet).
        upsample: ``"deconv"`` (``4 x 4`` stride-2 transposed convolution + norm + activation,
            SimpleBaseline) or ``"bilinear"`` (bilinear ``2x`` + ``3 x 3`` conv block: no
            checkerboard artefacts, cheaper on CPUs).
        act, norm: activation and norm of the upsampling layers (see ``scaledet.models.layers``).

    ``forward``: ``(B, C, h, w) -> (B, K, h * 2^n, w * 2^n)`` raw heatmaps (no activation; the
    MSE targets are in ``[0, 1]``). :attr:`upsample_factor` is ``2^n``.
    """

    def __init__(self, in_channels: int, num_keypoints: int, *, channels: int = 64,
                 num_upsample: int = 2, upsample: str = "deconv", act: str = "relu",
                 norm: str = "bn") -> None:
        super().__init__()
        if upsample not in ("deconv", "bilinear"):
            raise ValueError(f"upsample must be 'deconv' or 'bilinear', got {upsample!r}")
        if num_upsample < 0:
            raise ValueError(f"num_upsample must be >= 0, got {num_upsample}")
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(num_upsample):
            if upsample == "deconv":
                layers += [nn.ConvTranspose2d(cin, channels, 4, stride=2, padding=1, bias=False),
                           make_norm(norm, channels), make_act(act)]
            else:
                layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                           ConvBNAct(cin, channels, k=3, act=act, norm=norm)]
            cin = channels
        self.upsample = nn.Sequential(*layers)
        self.final = nn.Conv2d(cin, num_keypoints, 1)
        self.num_keypoints = num_keypoints
        self.upsample_factor = 2**num_upsample
        init_weights(self)  # Conv2d and norms; transposed convs keep PyTorch's default (BN follows)
        # SimpleBaseline: small final weights, so the initial maps are near 0 (the target's
        # background) and the MSE starts small
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.final(self.upsample(x))

    def loss(self, heatmaps: Tensor, points: Tensor, visible: Tensor, sigma: float = 2.0
             ) -> Tensor:
        """Weighted MSE of predicted ``(B, K, H, W)`` heatmaps against Gaussian targets of the
        ``(B, K, 2)`` ``points`` (heatmap pixels; ``visible (B, K)`` bool; ``sigma`` in heatmap
        pixels)."""
        size = (heatmaps.shape[-2], heatmaps.shape[-1])
        target, weight = gaussian_heatmaps(points, visible, size, sigma)
        return heatmap_loss(heatmaps, target, weight)

    @staticmethod
    def decode(heatmaps: Tensor, method: str = "dark", kernel_size: int = 11
               ) -> tuple[Tensor, Tensor]:
        """``coords (B, K, 2)`` in heatmap pixels and ``scores (B, K)``: ``method`` is
        ``"dark"`` (blur ``kernel_size``) or ``"argmax"`` (quarter offset)."""
        if method == "dark":
            return decode_dark(heatmaps, kernel_size=kernel_size)
        if method == "argmax":
            return decode_argmax(heatmaps)
        raise ValueError(f"method must be 'dark' or 'argmax', got {method!r}")


def soft_argmax(maps: Tensor) -> Tensor:
    """``(B, K, h, w)`` logits -> ``(B, K, 2)`` expected ``(x, y)`` of each map's spatial
    softmax, in map-normalised units (cell ``j``'s centre at ``(j + 0.5) / w``)."""
    b, k, h, w = maps.shape
    prob = torch.softmax(maps.float().reshape(b, k, h * w), -1).reshape(b, k, h, w)
    xs = (torch.arange(w, device=maps.device, dtype=prob.dtype) + 0.5) / w
    ys = (torch.arange(h, device=maps.device, dtype=prob.dtype) + 0.5) / h
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], -1)


class RLEHead(nn.Module):
    """Direct regression of joints with a learned residual density (RLE).

    Args:
        in_channels: ``C`` of the ``(B, C, h, w)`` input feature map.
        num_keypoints: ``K``.
        pool: ``(rows, cols)`` of the average pooling before the linear layers, flattened
            (``(1, 1)``: global average pooling, as RLE's ResNet models).
        hidden: width of an optional ``Linear + ReLU`` after the pooling (0: none, as the RLE
            COCO models).
        flow_layers, flow_hidden: the RealNVP of the loss (RLE: 6 couplings, 64 wide); it starts
            as the identity (a standard normal residual density).
        prior: the fixed residual density ``Q`` of :func:`rle_loss` (``"laplace"``).
        readout: how ``mu`` is read from the features: ``"fc"`` (RLE's: linear layers on the
            pooled features, ``sigmoid``) or ``"integral"`` (a 1 x 1 conv gives one map per
            joint and ``mu`` is the expectation of its spatial softmax, the soft-argmax of
            integral regression, Sun et al. ECCV 2018; still regression: no heatmap target,
            only the RLE likelihood). A small network's pooled features keep little of where
            things are, and the soft-argmax keeps the map's layout; ``sigma`` comes from the
            pooled features either way. :attr:`level`: the neck level the head reads (the finest
            for ``"integral"``, the deepest for ``"fc"``).

    ``forward``: ``(B, C, h, w) -> (mu, log_sigma)``, both ``(B, K, 2)`` ``(x, y)``:

    - ``mu`` in **crop-normalised** units (``(x + 0.5) / crop_width``, likewise ``y``; ``(0, 1)``
      inside the crop, a map cell's centre at ``(j + 0.5) / w``);
    - ``log_sigma = logsigmoid(.)``, the log of the per-coordinate scale in the same units;
      ``sigma`` is in ``(0, 1)`` (the RLE code's ``sigmoid``), computed in log space for
      stability. ``1 - sigma`` averaged over ``x, y`` is the joint's confidence
      (:meth:`scores`, as RLE).

    The linear layers start near zero (RLE: Xavier with gain 0.01), so every joint starts at
    the crop's centre with ``sigma = 0.5``.
    """

    def __init__(self, in_channels: int, num_keypoints: int, *, pool: tuple[int, int] = (1, 1),
                 hidden: int = 0, flow_layers: int = 6, flow_hidden: int = 64,
                 prior: str = "laplace", readout: str = "fc") -> None:
        super().__init__()
        if readout not in ("fc", "integral"):
            raise ValueError(f"readout must be 'fc' or 'integral', got {readout!r}")
        self.num_keypoints = num_keypoints
        self.prior = prior
        self.readout = readout
        self.level = 0 if readout == "integral" else -1
        self.maps = nn.Conv2d(in_channels, num_keypoints, 1) if readout == "integral" else None
        if self.maps is not None:  # uniform maps: every joint starts at the crop's centre
            nn.init.normal_(self.maps.weight, std=0.001)
            nn.init.zeros_(self.maps.bias)
        self.pool = (int(pool[0]), int(pool[1]))
        in_channels = in_channels * self.pool[0] * self.pool[1]
        if hidden > 0:
            self.fc = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True))
            in_channels = hidden
        else:
            self.fc = nn.Identity()
        self.coord = nn.Linear(in_channels, num_keypoints * 2) if readout == "fc" else None
        self.sigma = nn.Linear(in_channels, num_keypoints * 2)
        for layer in (self.coord, self.sigma) if readout == "fc" else (self.sigma,):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        self.flow = RealNVP(2, num_layers=flow_layers, hidden=flow_hidden, zero_init=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.outputs(x, F.adaptive_avg_pool2d(x, self.pool))

    def outputs(self, x: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """``forward`` given the input map and its ``(B, C, *pool)`` average pooling (an
        exporter computes the pooling its own way)."""
        b = x.shape[0]
        feat = self.fc(torch.flatten(pooled, 1))
        if self.maps is None:
            mu = torch.sigmoid(self.coord(feat)).reshape(b, self.num_keypoints, 2)
        else:
            mu = soft_argmax(self.maps(x))
        log_sigma = F.logsigmoid(self.sigma(feat)).reshape(b, self.num_keypoints, 2)
        return mu, log_sigma

    def loss(self, mu: Tensor, log_sigma: Tensor, target: Tensor, visible: Tensor) -> Tensor:
        """RLE loss of ``forward``'s outputs against ``(B, K, 2)`` crop-normalised targets
        (``visible (B, K)`` bool), averaged over visible joints; trains the flow too."""
        return rle_loss(mu, log_sigma, target, visible, self.flow, prior=self.prior)

    @staticmethod
    def scores(log_sigma: Tensor) -> Tensor:
        """``(B, K, 2) -> (B, K)`` per-joint confidence ``1 - mean(sigma)`` in ``(0, 1)``."""
        return 1 - log_sigma.exp().mean(-1)
