"""Deliberately broken: importing this module raises, as a plugin with a missing dependency would."""

import codecfw_dependency_that_does_not_exist  # noqa: F401
