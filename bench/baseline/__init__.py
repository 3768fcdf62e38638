"""The baseline: a minimal in-memory kefu.v1 relay on ``websockets`` + uvloop (see ``relay.py``)."""
