"""Tokenizers: patches and k-means (lesson 01), the autoencoder, each bottleneck (VQ, FSQ, LFQ, KL, and the
multi-scale residual VQ of lesson 10), the tokenizer that joins them, and its training losses."""
