"""``python -m course_lib.decompress``: the decompress command line, kept at this short name; it lives in :mod:`course_lib.tools.compress`."""
import sys

from course_lib.tools.compress import main_decompress

if __name__ == "__main__":
    sys.exit(main_decompress())
