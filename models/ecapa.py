"""ECAPA-TDNN speaker embedding network (Desplanques et al., 2020), shaped after SpeechBrain's
``spkrec-ecapa-voxceleb`` so that its ``embedding_model.ckpt`` loads with ``strict=True``.

Module attribute names mirror the checkpoint keys (``blocks.1.tdnn1.conv.conv.weight``, ...),
which is why the thin ``Conv1d``/``BatchNorm1d`` wrappers hold their layer as ``.conv``/``.norm``.

Every module takes ``lengths``: the number of valid frames of each batch item (int tensor [B]).
Padding never influences an item's output: "same" convolutions re-pad each item with the
reflection of its own frames, and every reduction over time is masked.

The model also takes optional per-frame ``weights`` (float [B, T] in [0, 1]) that say how much
each frame counts in the two reductions over time: the SE squeeze (a weighted mean) and the
attentive statistics pooling (attention logits + log(weight), -inf where the weight is 0;
the global-context mean/std weighted too). Frames of weight 0 (e.g. another speaker's) then
never enter a pooled statistic, although the convolutions still see them as context.
``lengths`` keep defining the valid region (convolution padding, zeroed padding); weights
past an item's length are ignored. ``weights=None`` is exactly the unweighted model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .features import lengths_to_mask


@dataclass(frozen=True)
class EcapaConfig:
    """Hyper-parameters; the defaults are those of ``spkrec-ecapa-voxceleb``."""

    input_size: int = 80
    channels: tuple[int, ...] = (1024, 1024, 1024, 1024, 3072)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    attention_channels: int = 128
    res2net_scale: int = 8
    se_channels: int = 128
    lin_neurons: int = 192
    global_context: bool = True

    @property
    def min_frames(self) -> int:
        """Shortest input (frames) for which every reflection padding is defined."""
        return max(d * (k - 1) // 2 for k, d in zip(self.kernel_sizes, self.dilations)) + 1


def _reflect_index(lengths: torch.Tensor, max_len: int, pad: int) -> torch.Tensor:
    """Index [B, max_len + 2*pad] that reflect-pads each row inside its own length."""
    pos = torch.arange(-pad, max_len + pad, device=lengths.device)[None, :]
    last = (lengths - 1)[:, None]
    idx = pos.abs()  # left edge: x[-i] -> x[i]
    idx = torch.where(idx > last, 2 * last - idx, idx)  # right edge: reflect about the item end
    return idx.clamp(0, max_len - 1)  # positions past an item's padding: any valid frame


def _tracing() -> bool:
    """True while the model is traced or compiled (ONNX export): sizes are symbolic there, so
    every data-dependent shortcut takes its general path (same results, no branch on values)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class Conv1d(nn.Module):
    """1-D convolution with "same" output length and per-item reflect padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T] -> [B, out, T]."""
        if self.pad:
            if lengths is None or (not _tracing() and bool((lengths == x.shape[-1]).all())):
                x = nn.functional.pad(x, (self.pad, self.pad), mode="reflect")
            else:
                idx = _reflect_index(lengths, x.shape[-1], self.pad)
                x = torch.gather(x, 2, idx[:, None, :].expand(-1, x.shape[1], -1))
        return self.conv(x)


class BatchNorm1d(nn.Module):
    """Batch norm over channels of [B, C, T] (named ``.norm`` for checkpoint compatibility)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv1d -> ReLU -> BatchNorm.

    Example:
        >>> TDNNBlock(80, 64, 5, 1)(torch.randn(2, 80, 30)).shape
        torch.Size([2, 64, 30])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation)
        self.activation = nn.ReLU()
        self.norm = BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.activation(self.conv(x, lengths)))


class Res2NetBlock(nn.Module):
    """Hierarchical residual-like convolutions over ``scale`` channel groups."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int):
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(
            TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        outs = [chunks[0]]
        y = None
        for i, block in enumerate(self.blocks, start=1):
            y = block(chunks[i] if y is None else chunks[i] + y, lengths)
            outs.append(y)
        return torch.cat(outs, dim=1)


def frame_weights(
    weights: torch.Tensor, lengths: torch.Tensor | None, time: int
) -> torch.Tensor:
    """Per-frame weights [B, T] restricted to each item's valid frames -> float32 [B, 1, T]."""
    w = weights.to(torch.float32)
    if w.shape[-1] != time:
        raise ValueError(f"weights have {w.shape[-1]} frames, features {time}")
    if lengths is not None:
        w = w * lengths_to_mask(lengths, time).to(torch.float32)
    return w[:, None, :]


def weighted_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over time of [B, C, T] weighted by ``weights`` [B, 1, T] (float32) -> [B, C, 1]."""
    return (x * weights).sum(dim=2, keepdim=True) / weights.sum(dim=2, keepdim=True)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of [B, C, T] counting only valid frames -> [B, C, 1]."""
    if lengths is None:
        return x.mean(dim=2, keepdim=True)
    mask = lengths_to_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
    return (x * mask).sum(dim=2, keepdim=True) / lengths[:, None, None].to(x.dtype)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channel gates from the masked time average."""

    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.conv1 = Conv1d(channels, se_channels, 1)
        self.relu = nn.ReLU()
        self.conv2 = Conv1d(se_channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``weights``: optional float32 [B, 1, T] from :func:`frame_weights` (0 past lengths)."""
        if weights is None:
            s = masked_mean(x, lengths)
        else:
            s = weighted_mean(x, weights).to(x.dtype)
        return x * self.sigmoid(self.conv2(self.relu(self.conv1(s))))


class SERes2NetBlock(nn.Module):
    """TDNN(1x1) -> Res2Net -> TDNN(1x1) -> SE, plus the residual."""

    def __init__(self, channels: int, scale: int, se_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, 1, 1)
        self.res2net_block = Res2NetBlock(channels, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(channels, channels, 1, 1)
        self.se_block = SEBlock(channels, se_channels)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = self.tdnn1(x)
        y = self.res2net_block(y, lengths)
        y = self.tdnn2(y)
        return self.se_block(y, lengths, weights) + x


def _weighted_stats(
    x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time of x [B, C, T] -> ([B, C], [B, C]).

    ``weights`` [B, C, T] or [B, 1, T] sum to 1 over valid frames and are 0 elsewhere. The
    sums over time are batched dot products (einsum -> bmm): no [B, C, T] product is written
    to memory, ~2x faster on CPU than ``(w * x).sum(2)``.
    """
    if weights.shape[1] == 1:
        w = weights[:, 0, :]
        mean = torch.einsum("bct,bt->bc", x, w)
        dev = x - mean[:, :, None]
        var = torch.einsum("bct,bt->bc", dev * dev, w)
    else:
        mean = torch.einsum("bct,bct->bc", weights, x)
        dev = x - mean[:, :, None]
        var = torch.einsum("bct,bct->bc", weights * dev, dev)
    return mean, var.clamp(min=eps).sqrt()


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and std over time, with global context, masked -> [B, 2C, 1]."""

    def __init__(self, channels: int, attention_channels: int, global_context: bool = True):
        super().__init__()
        self.global_context = global_context
        in_channels = channels * 3 if global_context else channels
        self.tdnn = TDNNBlock(in_channels, attention_channels, 1, 1)
        self.tanh = nn.Tanh()
        self.conv = Conv1d(attention_channels, channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, C, T] -> [B, 2C, 1]; ``weights``: optional float32 [B, 1, T], 0 past lengths."""
        if weights is not None:
            return self._weighted(x, weights)
        batch, _, time = x.shape
        if lengths is None:
            lengths = torch.full((batch,), time, device=x.device, dtype=torch.long)
        mask = lengths_to_mask(lengths, time)[:, None, :]
        if self.global_context:
            uniform = mask.to(x.dtype) / lengths[:, None, None].to(x.dtype)
            scores = self._logits(x, *_weighted_stats(x, uniform))
        else:
            scores = self._logits(x)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        attention = torch.softmax(scores, dim=2).to(x.dtype)
        mean, std = _weighted_stats(x, attention)
        return torch.cat([mean, std], dim=1)[:, :, None]

    def _logits(
        self, x: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention logits [B, C, T]: ``conv(tanh(tdnn(context)))``, context = [x; mean; std].

        The global context (mean, std) is constant over time, so the 1x1 ``tdnn`` convolution
        of the [B, 3C, T] concatenation is split: its x-part is a convolution over time, its
        mean/std part one [B, 2C] x [2C, A] product added to every frame. Same result, without
        writing the concatenation (3x the pooled features) and with a third of the FLOPs.
        """
        if mean is None or std is None:
            return self.conv(self.tanh(self.tdnn(x)))
        conv = self.tdnn.conv.conv  # kernel 1: no padding
        channels = x.shape[1]
        local = nn.functional.conv1d(x, conv.weight[:, :channels], conv.bias)
        glob = nn.functional.linear(torch.cat([mean, std], dim=1), conv.weight[:, channels:, 0])
        hidden = self.tdnn.norm(self.tdnn.activation(local + glob[:, :, None]))
        return self.conv(self.tanh(hidden))

    def _weighted(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Frame-weighted pooling: attention softmax(logits + log w), context stats weighted by w.

        With 0/1 weights this is exactly length masking; a frame of weight 0 has no influence.
        """
        keep = weights > 0
        if self.global_context:
            share = (weights / weights.sum(dim=2, keepdim=True)).to(x.dtype)
            scores = self._logits(x, *_weighted_stats(x, share)).float()
        else:
            scores = self._logits(x).float()
        # where(), not an addition of log(0): a zero-weight frame is -inf whatever its logit.
        scores = torch.where(keep, scores + torch.log(weights), float("-inf"))
        attention = torch.softmax(scores, dim=2).to(x.dtype)
        mean, std = _weighted_stats(x, attention)
        return torch.cat([mean, std], dim=1)[:, :, None]


@torch.no_grad()
def flush_denormals_(module: nn.Module) -> int:
    """Set subnormal floats (|v| < float32 tiny, 1.2e-38) in parameters and buffers to 0.

    The ``spkrec-ecapa-voxceleb`` checkpoint holds 73,476 subnormal values (weights that decayed
    to ~1e-40 in training: 46,080 in ``asp.tdnn``, 9,542 in ``blocks.1.tdnn1``, ...). x86 CPUs
    handle subnormal operands in microcode, ~100x slower, and torch's fp32 path (oneDNN) keeps
    them, so these few tensors made fp32 inference ~4.5x slower (its bf16 path, OpenVINO and
    ONNX Runtime flush them). A subnormal weight times an activation is far below float32
    resolution of any sum it enters, so the embeddings do not change (bit-identical on the
    reference clips). Returns the number of values flushed.
    """
    count = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point() and t.device.type != "meta":
            tiny = torch.finfo(t.dtype).tiny
            sub = (t != 0) & (t.abs() < tiny)
            n = int(sub.sum())
            if n:
                t.masked_fill_(sub, 0.0)
                count += n
    return count


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN: features [B, T, 80] + valid frame counts [B] -> embeddings [B, 192].

    Optional ``weights`` [B, T] (float in [0, 1], one per feature frame) weight the SE squeezes
    and the attentive statistics pooling; every item needs a positive weight on some valid
    frame (else its embedding is NaN). ``weights=None`` is the plain (unweighted) model.

    Example:
        >>> cfg = EcapaConfig(channels=(32, 32, 32, 32, 96), attention_channels=8,
        ...                   se_channels=8, lin_neurons=16)
        >>> EcapaTdnn(cfg).eval()(torch.randn(3, 50, 80), torch.tensor([50, 20, 35])).shape
        torch.Size([3, 16])
    """

    def __init__(self, config: EcapaConfig | None = None):
        super().__init__()
        cfg = config or EcapaConfig()
        self.config = cfg
        ch, ks, dl = cfg.channels, cfg.kernel_sizes, cfg.dilations
        blocks: list[nn.Module] = [TDNNBlock(cfg.input_size, ch[0], ks[0], dl[0])]
        for i in range(1, len(ch) - 1):
            blocks.append(SERes2NetBlock(ch[i], cfg.res2net_scale, cfg.se_channels, ks[i], dl[i]))
        self.blocks = nn.ModuleList(blocks)
        self.mfa = TDNNBlock(sum(ch[1:-1]), ch[-1], ks[-1], dl[-1])
        self.asp = AttentiveStatisticsPooling(ch[-1], cfg.attention_channels, cfg.global_context)
        self.asp_bn = BatchNorm1d(ch[-1] * 2)
        self.fc = Conv1d(ch[-1] * 2, cfg.lin_neurons, 1)

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = feats.transpose(1, 2)
        if lengths is not None:
            # Padded frames are zeroed so no value there (NaN included) can reach an output.
            x = x.masked_fill(~lengths_to_mask(lengths, x.shape[-1])[:, None, :], 0.0)
        w = None if weights is None else frame_weights(weights, lengths, x.shape[-1])
        hidden = []
        for i, block in enumerate(self.blocks):
            x = block(x, lengths) if i == 0 else block(x, lengths, w)
            hidden.append(x)
        x = self.mfa(torch.cat(hidden[1:], dim=1), lengths)
        x = self.asp_bn(self.asp(x, lengths, w))
        return self.fc(x)[:, :, 0]
