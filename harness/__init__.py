"""The world the tests and the benchmarks share: the bot assembled with its
plugins (``assembly``), backends with fault controls (``backends``,
``proxy``), bot instances in this process or in worker processes
(``instances``, ``worker``), the people and places that talk to it
(``world``), and a corpus of hostile images (``image_corpus``).

Its own package, so ``bench/`` depends on it and not on ``tests/``; the
pytest side (fixtures, Gherkin steps) stays in ``tests/harness``.
"""
