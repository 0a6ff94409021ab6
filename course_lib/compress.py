"""``python -m course_lib.compress``: the compress command line, kept at this short name; it lives in :mod:`course_lib.tools.compress`."""
import sys

from course_lib.tools.compress import main_compress

if __name__ == "__main__":
    sys.exit(main_compress())
