"""Tokens + GPT as a lossless compressor: range coding of token grids with the GPT's probabilities.

Paper: Language Modeling Is Compression (Deletang et al., 2023), https://arxiv.org/abs/2309.10668 --
a model that assigns probability p to a sequence gives an entropy coder a code of about -log2 p
bits, so the GPT's test NLL in bits *is* a file size. The coder is the range coder (Martin, 1979) of
the ``constriction`` package: Understanding Entropy Coding With Asymmetric Numeral Systems (ANS):
a Statistician's Perspective (Bamler, 2022), https://arxiv.org/abs/2201.01741.

The decoder must rebuild the encoder's categorical distributions bit for bit, or it decodes garbage.
So both directions compute them the same way: one token at a time through the KV cache, on a
float64 copy of the model on the CPU, in the same batches (a stream codes its grids side by side in
chunks of ``CHUNK``, token i of every grid of a chunk at step i), since a grid's logits change in
the last digits with the batch they are computed in. The teacher-forced ``GPT.logits`` agree with
these only up to rounding: enough to measure the rate (:func:`nll_bits`), not to decode.
``constriction`` gives every token at least its smallest probability (2**-24), so a token the model
rules out still codes, for about 24 bits.

Stream: a 12-byte header (magic, number of grids, a CRC of the model's weights, so that decoding
with another model fails loudly) followed by the range coder's 32-bit words.
"""
from __future__ import annotations

import copy
import math
import struct
import zlib

import constriction
import numpy as np
import torch
from einops import rearrange

from course_lib.generators.gpt import GPT
from course_lib.generators.transformer import KVCache

MAGIC = b"TGPT"
CHUNK = 64  # grids coded side by side: bounds the float64 KV cache (grids are split the same way to decode)
HEADER = struct.Struct("<4sII")  # magic, number of grids, CRC32 of the model weights


def nll_bits(model: GPT, tokens: torch.Tensor, classes=None) -> torch.Tensor:
    """-log2 p(grid) under the model for each grid (B,): the size an ideal entropy coder reaches."""
    with torch.no_grad():
        logits = model.logits(tokens.to(model.head.weight.device), classes).double()  # (B, N, K)
        log_probs = logits.log_softmax(dim=-1)
        flat = rearrange(tokens, "b h w -> b (h w)").to(logits.device)  # (B, N)
        picked = log_probs.gather(-1, flat[..., None])[..., 0]  # (B, N)
    return -picked.sum(dim=1).cpu() / math.log(2)


def model_fingerprint(model: GPT) -> int:
    """CRC32 of the model's weights (float32, in state-dict order): the decoder checks it."""
    crc = 0
    for name, value in model.state_dict().items():
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(), crc)
    return crc


def encode(model: GPT, tokens: torch.Tensor, classes=None) -> bytes:
    """Grids (B, h, w) -> one bytes stream. ``classes`` (conditional models) must be passed again to decode."""
    sequence = model.sequence(tokens, classes).cpu()  # (B, N+1); validates shape and range
    coder = _Coder(model)
    encoder = constriction.stream.queue.RangeEncoder()
    for chunk in sequence.split(CHUNK):  # (b, N+1): the decoder rebuilds the same batches
        cache = coder.model.new_cache()
        for i in range(model.config.num_tokens):
            probabilities = coder.next_probabilities(chunk[:, i], cache)  # (b, K)
            encoder.encode(chunk[:, i + 1].numpy().astype(np.int32), _FAMILY, probabilities)
    header = HEADER.pack(MAGIC, sequence.shape[0], coder.fingerprint)
    return header + encoder.get_compressed().astype("<u4").tobytes()


def decode(model: GPT, data: bytes, classes=None) -> torch.Tensor:
    """Inverse of :func:`encode` with the same model (and classes): the grids (B, h, w), exactly."""
    count, fingerprint = _read_header(data)
    first = model.class_tokens(classes, count).cpu()  # (B,)
    coder = _Coder(model)
    if coder.fingerprint != fingerprint:
        raise ValueError(f"this stream was encoded with another model (weights CRC {fingerprint:#010x}, "
                         f"this model {coder.fingerprint:#010x}); decode it with the same GPT")
    words = np.frombuffer(data, dtype="<u4", offset=HEADER.size).astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    grids = []
    for previous in first.split(CHUNK):  # (b,) class tokens, chunk by chunk as encoded
        cache, tokens = coder.model.new_cache(), []
        for _ in range(model.config.num_tokens):
            probabilities = coder.next_probabilities(previous, cache)  # (b, K)
            previous = torch.from_numpy(decoder.decode(_FAMILY, probabilities).astype(np.int64))  # (b,)
            tokens.append(previous)
        grids.append(torch.stack(tokens, dim=1))  # (b, N)
    return rearrange(torch.cat(grids), "b (h w) -> b h w", h=model.config.grid[0])


def stream_bits(data: bytes) -> dict:
    """The size of a stream in bits: ``total``, and ``payload`` (without the header)."""
    return {"total": 8 * len(data), "payload": 8 * (len(data) - HEADER.size)}


_FAMILY = constriction.stream.model.Categorical(perfect=False)


class _Coder:
    """The GPT as a source of next-token probabilities, computed identically when encoding and decoding."""

    def __init__(self, model: GPT):
        self.fingerprint = model_fingerprint(model)
        self.model = copy.deepcopy(model).cpu().double().eval()

    @torch.no_grad()
    def next_probabilities(self, newest: torch.Tensor, cache: KVCache) -> np.ndarray:
        """Feed the newest token of each row (b,); float64 probabilities (b, K) of the next one."""
        logits = self.model.next_logits(newest[:, None], cache)  # (b, K) float64
        return logits.softmax(dim=-1).numpy()


def _read_header(data: bytes) -> tuple[int, int]:
    if not isinstance(data, (bytes, bytearray)) or len(data) < HEADER.size:
        raise ValueError(f"expected a token stream of at least {HEADER.size} bytes, got "
                         f"{type(data).__name__} of length {len(data) if hasattr(data, '__len__') else '?'}")
    magic, count, fingerprint = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a token stream: expected magic {MAGIC!r}, got {magic!r}")
    if (len(data) - HEADER.size) % 4:
        raise ValueError(f"a token stream holds whole 32-bit words after its header; got {len(data)} bytes "
                         f"(truncated?)")
    return count, fingerprint
