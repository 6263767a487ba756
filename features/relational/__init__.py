"""The feature pipeline as relational expressions (Ibis), free of any engine.

Each function takes Ibis table expressions (and a cutoff where time matters) and returns one;
``features.relational.engine`` chooses DuckDB (embedded, the default) or Apache Spark once, at
the edge, and runs them. The pandas functions of ``features/`` are the reference these are
tested against (tests/test_relational_parity.py, tests/test_spark_parity.py).
"""
