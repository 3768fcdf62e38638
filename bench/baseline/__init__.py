"""The peers Kefu is measured against: minimal in-memory kefu.v1 relays on ``websockets`` + uvloop
(``relay.py``, the baseline), picows + uvloop (``picows_relay.py``) and Node's ``ws`` (``node/relay.mjs``)."""
