"""Support code for the tests (and the benchmarks): servers, stubs, fixtures, strategies."""
