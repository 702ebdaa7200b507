"""Root pytest configuration: docstring examples in ``src/`` run as doctests.

Examples marked ``# doctest: +SKIP`` on every line illustrate calls that need a warehouse, a
registry or a server; they are documentation, not tests, so they are deselected instead of
being reported as skipped tests.
"""
from __future__ import annotations

import doctest

from _pytest.doctest import DoctestItem


def _illustration_only(item) -> bool:
    examples = item.dtest.examples
    return bool(examples) and all(ex.options.get(doctest.SKIP) for ex in examples)


def pytest_collection_modifyitems(config, items):
    illustrations = [i for i in items if isinstance(i, DoctestItem) and _illustration_only(i)]
    if illustrations:
        config.hook.pytest_deselected(items=illustrations)
        skipped = set(map(id, illustrations))
        items[:] = [i for i in items if id(i) not in skipped]
