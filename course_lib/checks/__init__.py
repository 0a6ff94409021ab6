"""Every lesson's exercises: importing this package registers them with :mod:`course_lib.exercises`."""
from . import lesson00, lesson01  # noqa: F401
