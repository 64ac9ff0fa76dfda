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
from functools import cache
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdarts.ops import PRIMITIVES, FactorizedReduce
from pcdarts.supernet import MixedOp, SearchCell

_POOLS = tuple((PRIMITIVES.index(p), p) for p in ("max_pool_3x3", "avg_pool_3x3"))
_SKIP = PRIMITIVES.index("skip_connect")
_CONVS = tuple(
    (PRIMITIVES.index(p), p)
    for p in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
)


@dataclass(frozen=True)
class InputGroup:
    """The edges that leave one state of a cell."""

    state: int  # 0, 1: the preprocessed cell inputs; 2 + j: intermediate node j
    edges: tuple[int, ...]  # indices into the cell's MixedOps (= alpha rows), in node order
    nodes: tuple[int, ...]  # the intermediate node each edge feeds


@cache
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


class FusedSearchCell(SearchCell):
    """A :class:`~pcdarts.supernet.SearchCell` whose forward is grouped by input state (the
    module docstring): SearchCell's constructor, so the same modules, parameters and state
    dict, created in the same order (the same seed initialises both alike).
    :func:`pcdarts.create_model` builds supernets of these unless ``fused=False``.

    A SyncBatchNorm synchronises inside its own forward, which the grouped BN would bypass:
    once ``nn.SyncBatchNorm.convert_sync_batchnorm`` has converted the cell (it converts
    every BN of the module it is given; the distributed search converts the whole
    supernet), :attr:`grouped` is False and the forward is SearchCell's, edge by edge.
    """

    @property
    def grouped(self) -> bool:
        """Whether :meth:`forward` runs grouped: plain BatchNorm2d, not SyncBatchNorm (one
        of the cell's BNs tells, as the conversion replaces them all)."""
        return not isinstance(self.preprocess1.bn, nn.SyncBatchNorm)

    def forward(
        self, s0: Tensor, s1: Tensor, weights: Tensor, edge_weights: Tensor | None
    ) -> Tensor:
        """SearchCell.forward, grouped by input state. weights: (E, 8), edge_weights: (E,) or
        None -> (N, steps * C, H/s, W/s)."""
        if not self.grouped:
            return super().forward(s0, s1, weights, edge_weights)
        return _grouped_forward(self, s0, s1, weights, edge_weights)


def _grouped_forward(
    cell: FusedSearchCell, s0: Tensor, s1: Tensor, weights: Tensor, edge_weights: Tensor | None
) -> Tensor:
    states = [_preprocess(cell.preprocess0, s0), _preprocess(cell.preprocess1, s1)]
    op_rows = weights.unbind(0)
    edge_rows = edge_weights.unbind(0) if edge_weights is not None else None
    mixed: list[Tensor | None] = [None] * cell.steps  # (N, c, H, W): the processed slice
    bypass: list[Tensor | None] = [None] * cell.steps  # (N, C - c, H, W): the rest, None at K=1
    groups = input_groups(cell.steps)
    done = 0
    for node in range(cell.steps):
        while done < 2 + node:  # every state feeding this node has its edges computed
            group = groups[done]
            ops = [cell.edge(e) for e in group.edges]
            op_w = torch.stack([op_rows[e] for e in group.edges])  # (E, 8)
            edge_w = (
                torch.stack([edge_rows[e] for e in group.edges]) if edge_rows is not None else None
            )  # (E,)
            if edge_w is not None:
                op_w = op_w * edge_w.unsqueeze(1)
            parts, passed = _group_forward(ops, states[group.state], op_w)
            for i, target in enumerate(group.nodes):
                part = parts[:, i]
                acc = mixed[target]
                mixed[target] = part if acc is None else acc + part
                if passed is not None:
                    edge_weight = edge_w[i] if edge_w is not None else None
                    bypass[target] = _axpy(bypass[target], passed, edge_weight)
            done += 1
        node_mixed = mixed[node]
        assert node_mixed is not None  # every node has at least two input edges
        states.append(_shuffle_in(node_mixed, bypass[node], cell.k))
    return torch.cat(states[-cell.steps :], dim=1)


def _preprocess(module: nn.Module, x: Tensor) -> Tensor:
    """A cell's input preprocessing (ReLUConvBN or FactorizedReduce), run channels-last.

    Its 1x1 convs are 3x faster so on the CPU than on the cells' contiguous outputs
    (32x64x32x32 -> 32 channels, forward and backward: 7 ms against 22 ms on one thread);
    the stride-2 FactorizedReduce subsamples first, as the fused stride-2 skip does.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    if isinstance(module, FactorizedReduce):  # even H and W, as FactorizedReduce needs
        y = _factorized_reduce(module.first_relu()(x), [module], None)
    else:
        y = module(x)
    return _ChannelsLastGrad.apply(y)


def _axpy(acc: Tensor | None, x: Tensor, w: Tensor | None) -> Tensor:
    """acc + w * x, where a missing acc is 0 and a missing w is 1."""
    if w is None:
        return x if acc is None else acc + x
    return x * w if acc is None else torch.addcmul(acc, x, w)


def _shuffle_in(mixed: Tensor, bypass: Tensor | None, k: int) -> Tensor:
    """channel_shuffle(cat([mixed, bypass]), k) in one copy (see MixedOp.forward), written
    channels-last: the node states, and so the cell's output and the next cell's
    preprocessing, stay in the ops' layout."""
    if bypass is None:
        return mixed
    n, c, h, w = mixed.shape
    # Output channel i*k + j: mixed channel i for j = 0, bypass channel (j-1)*c + i else.
    by = bypass.permute(0, 2, 3, 1).reshape(n, h, w, k - 1, c).transpose(3, 4)
    out = torch.cat([mixed.permute(0, 2, 3, 1).unsqueeze(4), by], dim=4)  # (n, h, w, c, k)
    return out.view(n, h, w, c * k).permute(0, 3, 1, 2)


def _group_forward(ops: list[MixedOp], x: Tensor, op_w: Tensor) -> tuple[Tensor, Tensor | None]:
    """The E edges leaving ``x`` (N, C, H, W), with (E, 8) op weights (edge weights folded in).

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

    # Every op but skip_connect ends in a BN: the op's weight of each edge rides in as that
    # BN's per-channel scale, so the BN kernel applies it (and, in the arch step, yields its
    # gradient) instead of a separate multiply over the op's output and its backward.
    scale = op_w.t()  # (8, E)
    terms: list[Tensor] = []
    for idx, name in _POOLS:
        pooled = first.pool(name)[0](x_in)  # parameter-free: once for all edges
        bns = [op.pool(name)[1] for op in ops]
        terms.append(_batch_norm(_repeat(pooled, n_edges), bns, scale[idx]))
    if stride > 1:
        terms.append(_factorized_reduce(x_relu, [op.reduce_skip() for op in ops], scale[_SKIP]))
    for idx, name in _CONVS:
        terms.append(_conv_chain(x_rep, [op.conv_chain(name) for op in ops], n_edges, scale[idx]))

    out: Tensor | None = None
    for y in terms:
        y5 = _ChannelsLastGrad.apply(y).view(n, n_edges, c, *y.shape[2:])
        out = y5 if out is None else out + y5
    assert out is not None
    if stride == 1:  # skip_connect is the identity: broadcast over the edges, then weighted
        out = torch.addcmul(out, x_in.unsqueeze(1), scale[_SKIP].view(1, n_edges, 1, 1, 1))
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


def _conv_chain(x: Tensor, seqs: list[nn.Sequential], n_edges: int, scale: Tensor) -> Tensor:
    """A SepConv/DilConv ``op`` sequence of every edge at once, on the repeated ReLU input,
    its output times ``scale`` (E,) per edge (applied by the final BN).

    x: (N, E*c, H, W), edge-major. The leading ReLU is already applied.
    """
    layers = list(seqs[0])
    for pos in range(1, len(layers)):
        layer = layers[pos]
        if isinstance(layer, nn.ReLU):
            x = torch.relu(x)
        elif isinstance(layer, nn.BatchNorm2d):
            last = pos == len(layers) - 1
            bns = [cast(nn.BatchNorm2d, seq[pos]) for seq in seqs]  # the edges' alike
            x = _batch_norm(x, bns, scale if last else None)
        else:
            assert isinstance(layer, nn.Conv2d) and not isinstance(layer.padding, str)
            weight = torch.cat([cast(nn.Conv2d, seq[pos]).weight for seq in seqs])
            # depthwise: one group per channel of every edge; pointwise: one group per edge
            groups = x.shape[1] if layer.groups > 1 else n_edges
            stride, dilation = tuple(layer.stride), tuple(layer.dilation)
            padding = tuple(layer.padding)
            if stride == dilation == (2, 2) and padding[0] % 2 == padding[1] % 2 == 0:
                # A stride-2 conv dilated by 2 (stride-2 dil_conv) reads even pixels only:
                # it is the plain stride-1 conv of the even pixels, with half the padding.
                x = x[:, :, ::2, ::2].contiguous(memory_format=torch.channels_last)
                stride, dilation = (1, 1), (1, 1)
                padding = (padding[0] // 2, padding[1] // 2)
            x = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    assert isinstance(layers[-1], nn.BatchNorm2d)  # the scale was applied
    return x


def _factorized_reduce(x_relu: Tensor, frs: list[FactorizedReduce], scale: Tensor | None) -> Tensor:
    """FactorizedReduce of every edge (stride-2 skip_connect), times ``scale`` (E,) per edge
    when given -> (N, E*c, H/2, W/2). H and W even."""
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
    return _batch_norm(y.reshape(n, -1, h, w), [fr.bn for fr in frs], scale)


def _batch_norm(x: Tensor, bns: list[nn.BatchNorm2d], scale: Tensor | None = None) -> Tensor:
    """The BNs of E edges over their E*c stacked channels, each with its own statistics,
    each edge's output times ``scale[e]`` when given (folded into the BN's affine).

    x: (N, E*c, H, W). Matches ``scale[e] * bn_e(x_e)`` for every edge e, running
    statistics included.
    """
    bn = bns[0]
    n_edges = len(bns)
    if any(isinstance(b, nn.SyncBatchNorm) for b in bns):  # FusedSearchCell.grouped says no
        raise TypeError("a SyncBatchNorm in a grouped BN: convert the whole cell to SyncBatchNorm")
    if bn.momentum is None or not bn.track_running_stats:  # not in the supernet; kept exact
        y = torch.cat([b(z) for b, z in zip(bns, x.chunk(n_edges, dim=1), strict=True)], 1)
        if scale is None:
            return y
        return y * scale.repeat_interleave(x.shape[1] // n_edges).view(1, -1, 1, 1)
    training = bn.training
    mean = _cat([_tensor(b.running_mean) for b in bns])
    var = _cat([_tensor(b.running_var) for b in bns])
    weight = _cat([_tensor(b.weight) for b in bns]) if bn.affine else None
    bias = _cat([_tensor(b.bias) for b in bns]) if bn.affine else None
    if scale is not None:
        per_channel = scale.repeat_interleave(x.shape[1] // n_edges)
        weight = per_channel if weight is None else weight * per_channel
        bias = None if bias is None else bias * per_channel
    out = F.batch_norm(x, mean, var, weight, bias, training, bn.momentum, bn.eps)
    if training:  # one edge: _cat handed F.batch_norm its own buffers, updated in place
        with torch.no_grad():
            for b, m, v in zip(bns, mean.chunk(n_edges), var.chunk(n_edges), strict=True):
                if n_edges > 1:
                    _tensor(b.running_mean).copy_(m)
                    _tensor(b.running_var).copy_(v)
                _tensor(b.num_batches_tracked).add_(1)
    return out


def _tensor(t: Tensor | None) -> Tensor:
    """A BN's optional buffer or parameter that the supernet's BNs have (track_running_stats)."""
    assert t is not None
    return t


def _cat(tensors: list[Tensor]) -> Tensor:
    """torch.cat, without a copy for one tensor (so in-place updates reach it)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
