"""The instructor's grader: each submitted notebook graded in its own sandbox."""
