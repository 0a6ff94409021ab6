"""Image Tokenization Labs helper library."""
