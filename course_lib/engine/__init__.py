"""The training engine: run-time switches, seeding, atomic files, checkpoints and the one training loop."""
