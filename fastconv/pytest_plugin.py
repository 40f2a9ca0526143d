"""pytest plugin (entry point ``pytest11``): the ``backend_conformance`` fixture, for a variant's own tests."""
import pytest


@pytest.fixture
def backend_conformance():
    """A function ``check(backend, quick=False, **options)`` that runs ``fastconv.testing.check_backend``
    (a backend name, a ``variant.py[:attr]`` path, or a module or object with kernel functions) and
    fails the test with the report when a check fails; it returns the report::

        def test_my_variant_conforms(backend_conformance):
            backend_conformance(my_variant)
    """
    from fastconv.conformance import check_backend  # here, not on import: loading the plugin stays free

    def check(backend, quick=False, **options):
        report = check_backend(backend, quick=quick, **options)
        if not report.ok:
            pytest.fail(str(report), pytrace=False)
        return report
    return check
