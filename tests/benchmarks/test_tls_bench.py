"""`make bench` runs the TLS comparison; its arguments parse, and its CPU probe reads this process."""

from __future__ import annotations

import os

from benchmarks import tls
from benchmarks.run_all import SECTIONS, parse_args, section_args


def test_run_all_has_the_tls_section():
    assert "tls" in SECTIONS
    quick = section_args("tls", parse_args(["--sections", "tls", "--quick"]))
    args = tls.parse_args(quick)
    assert (args.preset, args.rounds, args.seconds, args.reps) == ("lite", 1, 2.0, 2)
    assert tls.parse_args(section_args("tls", parse_args([]))).rounds == 3


def test_cpu_probe_counts_this_process():
    before = tls.cpu_s(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert tls.cpu_s(os.getpid()) > before
