"""Multi-scale deformable attention against a loop-by-loop bilinear sampling reference."""

import torch

from scaledet.models.detr.deformable import MSDeformableAttention


def _bilinear(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """``value (d, H, W)`` at normalised ``(x, y)`` with grid_sample's align_corners=False
    convention (pixel centres at (i + 0.5) / W) and zeros outside."""
    d, h, w = value.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(d, dtype=value.dtype)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            out += weight * value[:, yi, xi]
    return out


def test_matches_the_explicit_sum():
    torch.manual_seed(0)
    dim, heads, levels, points = 8, 2, 2, 3
    attn = MSDeformableAttention(dim, heads, levels, points).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    shapes = [(5, 6), (3, 2)]
    b, q = 2, 4
    memory = torch.randn(b, sum(h * w for h, w in shapes), dim, dtype=torch.double)
    query = torch.randn(b, q, dim, dtype=torch.double)
    ref = torch.cat([torch.rand(b, q, 2) * 0.8 + 0.1, torch.rand(b, q, 2) * 0.5 + 0.1],
                    -1).double()
    out = attn(query, ref, memory, shapes)

    with torch.no_grad():
        expected = _reference(attn, query, ref, memory, shapes)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-9, atol=1e-9)


def _reference(attn, query, ref, memory, shapes):
    b, q, dim = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    hd = dim // heads
    value = attn.value_proj(memory)
    offsets = attn.sampling_offsets(query).view(b, q, heads, levels, points, 2)
    weights = attn.attention_weights(query).view(b, q, heads, levels * points).softmax(-1)
    expected = torch.zeros(b, q, dim, dtype=torch.double)
    for i in range(b):
        for j in range(q):
            for h in range(heads):
                acc = torch.zeros(hd, dtype=torch.double)
                start = 0
                for lv, (hh, ww) in enumerate(shapes):
                    v = value[i, start:start + hh * ww, h * hd:(h + 1) * hd].T.reshape(hd, hh, ww)
                    start += hh * ww
                    for p in range(points):
                        off = offsets[i, j, h, lv, p]
                        x = ref[i, j, 0] + off[0] / points * ref[i, j, 2] * 0.5
                        y = ref[i, j, 1] + off[1] / points * ref[i, j, 3] * 0.5
                        acc += weights[i, j, h, lv * points + p] * _bilinear(v, float(x), float(y))
                expected[i, j, h * hd:(h + 1) * hd] = acc
    return attn.output_proj(expected)


def test_initial_offsets_point_in_every_direction():
    attn = MSDeformableAttention(16, num_heads=4, num_levels=1, num_points=2)
    bias = attn.sampling_offsets.bias.view(4, 1, 2, 2)
    directions = bias[:, 0, 0]
    assert torch.allclose(directions.abs().max(-1).values, torch.ones(4))
    assert len({tuple(d.sign().tolist()) for d in directions}) == 4
    torch.testing.assert_close(bias[:, 0, 1], 2 * bias[:, 0, 0])
