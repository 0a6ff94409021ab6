"""``python -m course_lib.evaluate``: the evaluate command line, kept at this short name; it lives in :mod:`course_lib.tools.evaluate`."""
import sys

from course_lib.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
