"""ECAPA-TDNN speaker embedding network (Desplanques et al., 2020), shaped after SpeechBrain's
``spkrec-ecapa-voxceleb`` so that its ``embedding_model.ckpt`` loads with ``strict=True``.

Module attribute names mirror the checkpoint keys (``blocks.1.tdnn1.conv.conv.weight``, ...),
which is why the thin ``Conv1d``/``BatchNorm1d`` wrappers hold their layer as ``.conv``/``.norm``.

Every module takes ``lengths``: the number of valid frames of each batch item (int tensor [B]).
Padding never influences an item's output: "same" convolutions re-pad each item with the
reflection of its own frames, and every reduction over time is masked.
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


class Conv1d(nn.Module):
    """1-D convolution with "same" output length and per-item reflect padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T] -> [B, out, T]."""
        if self.pad:
            if lengths is None or bool((lengths == x.shape[-1]).all()):
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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        s = masked_mean(x, lengths)
        return x * self.sigmoid(self.conv2(self.relu(self.conv1(s))))


class SERes2NetBlock(nn.Module):
    """TDNN(1x1) -> Res2Net -> TDNN(1x1) -> SE, plus the residual."""

    def __init__(self, channels: int, scale: int, se_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, 1, 1)
        self.res2net_block = Res2NetBlock(channels, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(channels, channels, 1, 1)
        self.se_block = SEBlock(channels, se_channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        y = self.tdnn1(x)
        y = self.res2net_block(y, lengths)
        y = self.tdnn2(y)
        return self.se_block(y, lengths) + x


def _weighted_stats(
    x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time; ``weights`` sum to 1 over valid frames, 0 elsewhere."""
    mean = (weights * x).sum(dim=2)
    var = (weights * (x - mean[:, :, None]).square()).sum(dim=2)
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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, time = x.shape
        if lengths is None:
            lengths = torch.full((batch,), time, device=x.device, dtype=torch.long)
        mask = lengths_to_mask(lengths, time)[:, None, :]
        if self.global_context:
            uniform = mask.to(x.dtype) / lengths[:, None, None].to(x.dtype)
            mean, std = _weighted_stats(x, uniform)
            context = torch.cat(
                [x, mean[:, :, None].expand(-1, -1, time), std[:, :, None].expand(-1, -1, time)],
                dim=1,
            )
        else:
            context = x
        scores = self.conv(self.tanh(self.tdnn(context)))
        scores = scores.float().masked_fill(~mask, float("-inf"))
        attention = torch.softmax(scores, dim=2).to(x.dtype)
        mean, std = _weighted_stats(x, attention)
        return torch.cat([mean, std], dim=1)[:, :, None]


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN: features [B, T, 80] + valid frame counts [B] -> embeddings [B, 192].

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

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = feats.transpose(1, 2)
        if lengths is not None:
            # Padded frames are zeroed so no value there (NaN included) can reach an output.
            x = x.masked_fill(~lengths_to_mask(lengths, x.shape[-1])[:, None, :], 0.0)
        hidden = []
        for block in self.blocks:
            x = block(x, lengths)
            hidden.append(x)
        x = self.mfa(torch.cat(hidden[1:], dim=1), lengths)
        x = self.asp_bn(self.asp(x, lengths))
        return self.fc(x)[:, :, 0]
