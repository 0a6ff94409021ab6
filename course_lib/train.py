"""``python -m course_lib.train``: the train command line, kept at this short name; it lives in :mod:`course_lib.tools.train`."""
import sys

from course_lib.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
