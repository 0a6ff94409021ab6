"""Evaluation: image metrics, the JPEG baseline, and tokenizer evaluation on a held-out split."""
