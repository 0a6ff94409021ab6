"""Generators on image tokens (lessons 07-10): one transformer core and the models built on it.

- ``transformer``: pre-norm blocks, causal, full or caller-given (block) attention, learned or rotary positions,
  optional adaLN-Zero conditioning, a KV cache (shared by the GPT, MaskGIT and the DiT);
- ``configs``: what the generators' configs share (grid and class checks, the GPT's and MaskGIT's
  token-grid config, configs from checkpoint dicts and presets);
- ``sampling``: the shifted next-token loss, one sampling step, the classifier-free-guidance logits;
- ``gpt``: raster-order next-token prediction over a token grid, class-conditional, with sampling;
- ``codec``: tokens + GPT as a lossless compressor (range coding with the GPT's probabilities);
- ``mask_schedule``, ``maskgit``: masked token modelling and confidence-based parallel decoding (lesson 08);
- ``flow``, ``dit``, ``toy2d``: flow matching, a DiT on continuous latents, and a 2-D toy (lesson 09);
- ``var``: next-scale prediction over a multi-scale tokenizer's pyramid, one pass per scale (lesson 10).
"""
