"""Kefu's benchmarks.

``python -m bench`` (``bench/cli.py``) is the high-rate generator: workloads (pairs, latency, fanout,
idle, storm, chat) spread over worker processes on uvloop, against the peer relays (``bench/baseline``:
websockets, picows, Node ws) and Kefu on each store, with a ratio table, JSON and plots. ``bench/locustfile.py`` drives realistic
shoppers and agents with locust. ``bench/bench_frames.py`` is the frame codec micro-benchmark.
See docs/benchmarks.md.
"""
