"""Tools: command lines (train, evaluate, make_checkpoints) and course authoring (nbtools, build_course)."""
