import pytest

# Shared checks live outside test modules: rewrite their asserts too, so a failure shows values.
pytest.register_assert_rewrite("tests.integration.authproxy")
