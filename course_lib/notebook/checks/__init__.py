"""Every lesson's exercises, registered: notebooks and the grader import the check mechanism from here.

    from course_lib.notebook.checks import check
"""
from course_lib.notebook.exercises import check, evaluate, exercises, get_exercise  # noqa: F401

from . import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07  # noqa: F401,E402
from . import lesson08, lesson09, lesson10  # noqa: F401,E402
