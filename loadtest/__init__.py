"""Load tests and benchmarks (print figures, no asserts)."""
