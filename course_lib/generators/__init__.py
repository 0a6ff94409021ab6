"""Generators on image tokens (lessons 07-10): one transformer core and the models built on it.

- ``transformer``: pre-norm blocks, causal, full or caller-given (block) attention, learned or rotary positions,
  optional adaLN-Zero conditioning, a KV cache (shared by the GPT, MaskGIT and the DiT);
- ``configs``: what the generators' configs share (grid checks, the GPT's and MaskGIT's token-grid
  config, one table of preset sizes, configs from presets);
- ``conditioning``: class ids to embedding rows, the "no class" row, class dropout (every generator);
- ``drawing``: sampling as a library call, each generator registering its settings;
- ``runs``: a generator's training data (a tokenizer's grids or latents) and its run on the one skeleton;
- ``sampling``: the shifted next-token loss, one sampling step, the classifier-free-guidance logits;
- ``gpt``: raster-order next-token prediction over a token grid, class-conditional, with sampling;
- ``codec``: tokens + GPT as a lossless compressor (range coding with the GPT's probabilities);
- ``mask_schedule``, ``maskgit``: masked token modelling and confidence-based parallel decoding (lesson 08);
- ``flow``, ``dit``, ``toy2d``: flow matching, a DiT on continuous latents, and a 2-D toy (lesson 09);
- ``var``: next-scale prediction over a multi-scale tokenizer's pyramid, one pass per scale (lesson 10).
"""
