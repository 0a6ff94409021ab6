"""Every lesson's exercises: importing this package registers them with :mod:`course_lib.exercises`."""
from . import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05  # noqa: F401
