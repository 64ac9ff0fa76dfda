"""The fast forward of a supernet cell: SearchCell's maths, grouped by input state.

Every edge of a PC-DARTS cell processes the *same* first C/K channels of its input state
(method §2: the fixed slice; the shuffle acts on the edge's output), so the edges leaving
one state share their input. The edge-by-edge forward (:class:`~pcdarts.supernet.MixedOp`,
kept as the oracle) repeats per edge what depends on the input alone. Here, per input
state with E outgoing edges:

- one ReLU of the slice, and one copy of it repeated E times, feed every conv op;
- each conv op of the E edges runs as one grouped conv (edge weights concatenated:
  ``(E*c, 1, k, k)`` depthwise, ``(E*c, c, 1, 1)`` pointwise with ``groups=E``) and one
  BN over E*c channels (BN is per channel, so the statistics are the edges' own; the
  running statistics are the edges' buffers, concatenated and written back);
- the two pools and the stride-2 bypass pool run once, not once per edge;
- the alpha weights, times the edge-normalisation weight of each edge, weight the op
  outputs of all E edges in one broadcast multiply-add per op;
- the channel shuffle of ``cat([mixed, bypass])`` is linear, so a node sums its edges'
  mixed parts and their (beta-weighted) bypass parts first and shuffles once.

Outputs and gradients equal the oracle's up to float32 rounding (the sums run in another
order); the modules and therefore the state dict are the oracle's, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdarts.ops import PRIMITIVES

if TYPE_CHECKING:
    from pcdarts.supernet import SearchCell

_MAX, _AVG, _SKIP = (PRIMITIVES.index(p) for p in ("max_pool_3x3", "avg_pool_3x3", "skip_connect"))
_CONVS = tuple(
    PRIMITIVES.index(p) for p in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
)


@dataclass(frozen=True)
class InputGroup:
    """The edges that leave one state of a cell."""

    state: int  # 0, 1: the preprocessed cell inputs; 2 + j: intermediate node j
    edges: tuple[int, ...]  # indices into the cell's MixedOps (= alpha rows), in node order
    nodes: tuple[int, ...]  # the intermediate node each edge feeds


def input_groups(steps: int) -> tuple[InputGroup, ...]:
    """Group a cell's edges by input state; state i feeds node j iff i < 2 + j (method §1)."""
    groups = []
    for state in range(steps + 1):  # the last node feeds nothing inside the cell
        edges, nodes = [], []
        offset = 0
        for node in range(steps):
            if state < 2 + node:
                edges.append(offset + state)
                nodes.append(node)
            offset += 2 + node
        groups.append(InputGroup(state, tuple(edges), tuple(nodes)))
    return tuple(groups)


def fusable(cell: nn.Module) -> bool:
    """Plain BatchNorm2d only: a SyncBatchNorm must see its own forward to synchronise."""
    return not any(isinstance(m, nn.SyncBatchNorm) for m in cell.modules())


def cell_forward(
    cell: SearchCell, s0: Tensor, s1: Tensor, weights: Tensor, weights2: Tensor | None
) -> Tensor:
    """SearchCell.forward, grouped by input state. weights: (E, 8), weights2: (E,) or None."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    w_rows = weights.unbind(0)
    b_rows = weights2.unbind(0) if weights2 is not None else None
    mixed: list[Any] = [None] * cell.steps  # (N, c, H, W): the processed slice per node
    bypass: list[Any] = [None] * cell.steps  # (N, C - c, H, W): the rest, None at K=1
    k: int = cell._ops[0].k  # type: ignore[assignment]
    groups = cell.input_groups
    done = 0
    for node in range(cell.steps):
        while done < 2 + node:  # every state feeding this node has its edges computed
            group = groups[done]
            ops: list[Any] = [cell._ops[e] for e in group.edges]
            edge_w = torch.stack([w_rows[e] for e in group.edges])  # (E, 8)
            betas = torch.stack([b_rows[e] for e in group.edges]) if b_rows is not None else None
            if betas is not None:
                edge_w = edge_w * betas.unsqueeze(1)
            parts, passed = _group_forward(ops, states[group.state], edge_w)
            for i, target in enumerate(group.nodes):
                part = parts[:, i]
                mixed[target] = part if mixed[target] is None else mixed[target] + part
                if passed is not None:
                    beta = betas[i] if betas is not None else None
                    bypass[target] = _axpy(bypass[target], passed, beta)
            done += 1
        states.append(_shuffle_in(mixed[node], bypass[node], k))
    return torch.cat(states[-cell.steps :], dim=1)


def _axpy(acc: Tensor | None, x: Tensor, w: Tensor | None) -> Tensor:
    """acc + w * x, where a missing acc is 0 and a missing w is 1."""
    if w is None:
        return x if acc is None else acc + x
    return x * w if acc is None else torch.addcmul(acc, x, w)


def _shuffle_in(mixed: Tensor, bypass: Tensor | None, k: int) -> Tensor:
    """channel_shuffle(cat([mixed, bypass]), k) in one copy (see MixedOp.forward)."""
    if bypass is None:
        return mixed
    n, c, h, w = mixed.shape
    by = bypass.view(n, k - 1, c, h, w).transpose(1, 2)
    return torch.cat([mixed.unsqueeze(2), by], dim=2).view(n, c * k, h, w)


def _group_forward(
    ops: list[Any], x: Tensor, edge_w: Tensor
) -> tuple[Tensor, Tensor | None]:
    """The E edges leaving ``x`` (N, C, H, W), with (E, 8) op weights (beta folded in).

    Returns their mixed slices (N, E, c, H/s, W/s) and the shared bypass (N, C - c, H/s,
    W/s), or None at K=1.
    """
    first = ops[0]
    n_edges, k, stride = len(ops), first.k, first.stride
    n, channels = x.shape[:2]
    c = channels // k
    x_in, x_bypass = x.split([c, channels - c], dim=1)
    # The ops run channels-last: depthwise convs and pools are 2-4x faster so on the CPU
    # (benchmarks/search_step.py), and every conv input is a whole tensor, never a channel
    # slice of a channels-last one (see pcdarts.runtime.memory_format).
    x_in = x_in.contiguous(memory_format=torch.channels_last)
    x_relu = torch.relu(x_in)  # every conv op starts with this ReLU
    x_rep = _repeat(x_relu, n_edges)  # (N, E*c, H, W), edge-major

    terms: list[tuple[int, Tensor]] = []
    for idx in (_MAX, _AVG):
        pooled = first._ops[idx][0](x_in)  # parameter-free: once for all edges
        terms.append((idx, _batch_norm(_repeat(pooled, n_edges), [op._ops[idx][1] for op in ops])))
    if stride == 1:
        terms.append((_SKIP, x_in.unsqueeze(1)))  # identity: broadcast over the edges
    else:
        terms.append((_SKIP, _factorized_reduce(x_relu, [op._ops[_SKIP] for op in ops])))
    for idx in _CONVS:
        terms.append((idx, _conv_chain(x_rep, [op._ops[idx].op for op in ops], n_edges)))

    out: Tensor | None = None
    for idx, y in terms:
        y5 = y if y.dim() == 5 else _ChannelsLastGrad.apply(y).view(n, n_edges, c, *y.shape[2:])
        w = edge_w[:, idx].view(1, n_edges, 1, 1, 1)
        out = y5 * w if out is None else torch.addcmul(out, y5, w)
    assert out is not None
    if k == 1:
        return out, None
    return out, first.mp(x_bypass) if stride > 1 else x_bypass


class _ChannelsLastGrad(torch.autograd.Function):
    """The identity, whose backward hands on its gradient channels-last.

    The op outputs are channels-last; their gradients arrive in the layout of the node sums
    (contiguous). Converting once here keeps every conv and BN backward of the chain in one
    layout instead of mixing them, which is several times slower on the CPU.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _repeat(x: Tensor, times: int) -> Tensor:
    """(N, c, H, W) -> (N, times*c, H, W), in x's memory format."""
    return torch.cat([x] * times, dim=1) if times > 1 else x


def _conv_chain(x: Tensor, seqs: list[Any], n_edges: int) -> Tensor:
    """A SepConv/DilConv ``op`` sequence of every edge at once, on the repeated ReLU input.

    x: (N, E*c, H, W), edge-major. The leading ReLU is already applied.
    """
    layers = list(seqs[0])
    for pos in range(1, len(layers)):
        layer = layers[pos]
        if isinstance(layer, nn.ReLU):
            x = torch.relu(x)
        elif isinstance(layer, nn.BatchNorm2d):
            x = _batch_norm(x, [seq[pos] for seq in seqs])
        else:
            assert isinstance(layer, nn.Conv2d)
            weight = torch.cat([seq[pos].weight for seq in seqs])
            # depthwise: one group per channel of every edge; pointwise: one group per edge
            groups = x.shape[1] if layer.groups > 1 else n_edges
            stride, dilation = tuple(layer.stride), tuple(layer.dilation)
            padding: tuple[int, ...] = tuple(layer.padding)  # type: ignore[arg-type]
            if stride == dilation == (2, 2) and padding[0] % 2 == padding[1] % 2 == 0:
                # A stride-2 conv dilated by 2 (stride-2 dil_conv) reads even pixels only:
                # it is the plain stride-1 conv of the even pixels, with half the padding.
                x = x[:, :, ::2, ::2].contiguous(memory_format=torch.channels_last)
                stride, dilation = (1, 1), (1, 1)
                padding = (padding[0] // 2, padding[1] // 2)
            x = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    return x


def _factorized_reduce(x_relu: Tensor, frs: list[Any]) -> Tensor:
    """FactorizedReduce of every edge (stride-2 skip_connect) -> (N, E, c, H/2, W/2)."""
    n_edges = len(frs)
    w1 = torch.cat([fr.conv_1.weight for fr in frs])
    w2 = torch.cat([fr.conv_2.weight for fr in frs])
    # A 1x1 stride-2 conv is a 1x1 conv of the even pixels (odd ones for the shifted path):
    # subsampling first is 4x less work than the strided conv's backward.
    cl = torch.channels_last
    y1 = F.conv2d(x_relu[:, :, ::2, ::2].contiguous(memory_format=cl), w1)  # (N, E*c/2, H/2, W/2)
    y2 = F.conv2d(x_relu[:, :, 1::2, 1::2].contiguous(memory_format=cl), w2)
    n, _, h, w = y1.shape
    y = torch.cat([y1.view(n, n_edges, -1, h, w), y2.view(n, n_edges, -1, h, w)], dim=2)
    return _batch_norm(y.reshape(n, -1, h, w), [fr.bn for fr in frs])


def _batch_norm(x: Tensor, bns: list[Any]) -> Tensor:
    """The BNs of E edges over their E*c stacked channels, each with its own statistics.

    x: (N, E*c, H, W). Matches ``bn_e(x_e)`` for every edge e, running statistics included.
    """
    bn = bns[0]
    if len(bns) == 1:
        return bn(x)
    if bn.momentum is None or not bn.track_running_stats:  # not in the supernet; kept exact
        return torch.cat([b(y) for b, y in zip(bns, x.chunk(len(bns), dim=1), strict=True)], 1)
    training = bn.training
    mean = torch.cat([b.running_mean for b in bns])
    var = torch.cat([b.running_var for b in bns])
    weight = torch.cat([b.weight for b in bns]) if bn.affine else None
    bias = torch.cat([b.bias for b in bns]) if bn.affine else None
    out = F.batch_norm(x, mean, var, weight, bias, training, bn.momentum, bn.eps)
    if training:
        with torch.no_grad():
            for b, m, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns)), strict=True):
                b.running_mean.copy_(m)
                b.running_var.copy_(v)
                b.num_batches_tracked.add_(1)
    return out
