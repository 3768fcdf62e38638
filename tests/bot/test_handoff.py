"""Recognising a shopper who asks for a person."""

import pytest

from gateway.bot import asks_for_human


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("人工", "人工"),
        ("转人工", "转人工"),
        ("人工客服！！", "人工客服"),
        ("退货太麻烦了，给我转人工", "转人工"),
        ("我要找真人", "真人"),
        ("不要机器人，叫你们经理来", "不要机器人"),
        ("human please", "human"),
        ("Can I talk to an AGENT", "talk to an agent"),
        ("agent", "agent"),
        ("I want a real person", "real person"),
        ("let me speak to someone", "speak to someone"),
        ("is there a live chat", "live chat"),
        ("get me a representative", "representative"),
        ("轉人工", "转人工"),  # traditional characters
        ("我要找客服", "找客服"),
        ("can I talk to customer service", "talk to customer service"),
        ("customer service please", "customer service please"),
        ("I want to speak to a manager", "speak to a manager"),
        ("get me your manager", "get me your manager"),
        ("zhuan rengong", "rengong"),
        ("人工智能回答不了，转人工", "转人工"),
        ("你不是真人，我要人工", "要人工"),
    ],
)
def test_requests_for_a_person(text, phrase):
    assert asks_for_human(text) == phrase


@pytest.mark.parametrize(
    "text",
    [
        "什么时候发货",
        "不用人工，我自己看看",
        "no need for an agent, thanks",
        "I don't need a human",
        "where is my order",
        "客服在吗",  # greets the service, which the bot is
        "不用找客服了",
        "what does the manager of the brand say about fakes",
        "你是人工智能吗",  # artificial intelligence
        "你是真人吗",  # what the bot is, not a request
        "你是机器人还是真人",
        "客服小姐姐好",
        "are you a bot or a human?",
        "is this an agent or a bot",
        "am I talking to a real person?",
        "customer service was great last time, thanks",
    ],
)
def test_not_requests_for_a_person(text):
    assert asks_for_human(text) is None
