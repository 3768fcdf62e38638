"""Log lines say which node wrote them (a cluster's logs are read together)."""

from __future__ import annotations

import json
import logging

from gateway.logs import configure


def test_every_line_carries_the_node_id_in_both_formats(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("json", "info", node="host-ab12cd-w1")
        logging.getLogger("kefu.test").info("hello")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["node"], line["msg"]) == ("host-ab12cd-w1", "hello")
        configure("text", "info", node="host-ab12cd-w1")
        logging.getLogger("kefu.test").info("50% done")
        assert " [host-ab12cd-w1] kefu.test: 50% done" in capsys.readouterr().err
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
