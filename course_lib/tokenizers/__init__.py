"""Tokenizers: patches and k-means (lesson 01), the autoencoder, each bottleneck (VQ, FSQ, LFQ, KL),
the tokenizer that joins them, and its training losses."""
