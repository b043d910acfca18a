"""``benchmarks/`` is a folder of scripts beside the package: make it importable as ``echoseg bench`` does."""

from __future__ import annotations

from echoseg.bench import find_benchmarks

assert find_benchmarks(), "tests/benchmarks needs the source checkout's benchmarks/ folder"
