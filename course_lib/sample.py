"""``python -m course_lib.sample``: the sample command line, kept at this short name; it lives in :mod:`course_lib.tools.sample`."""
import sys

from course_lib.tools.sample import main

if __name__ == "__main__":
    sys.exit(main())
