from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError

ACCOUNTS = [{"name": "primary", "login_url": "https://login2.responsys.net", "user_name": "u", "password": "p"}]


def _problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"accounts": ACCOUNTS, **data}, environ={"SMS_PW": "pw"})
    return caught.value.problems


def test_the_issues_example_config_reads() -> None:
    config = parse_config({
        "accounts": ACCOUNTS,
        "sms": {"upstreams": [{"name": "sms1", "url": "https://mt.example.net", "user_name": "api",
                               "password_env": "SMS_PW"}],
                "alternate_senders": {98765: ["+13125550100"]}},  # unquoted in YAML: a number
        "callbacks": {"allow_networks": ["127.0.0.0/8"]},
    }, environ={"SMS_PW": "pw"})
    assert config.sms.upstreams[0].password.reveal() == "pw" and "pw" not in repr(config)
    assert config.sms.alternate_senders == {"98765": ["+13125550100"]}
    assert config.callbacks.allow_networks == ["127.0.0.0/8"]


def test_sms_is_off_by_default() -> None:
    config = parse_config({"accounts": ACCOUNTS}, environ={})
    assert config.sms.upstreams == [] and config.callbacks.allow_networks == []


def test_every_sms_problem_is_named() -> None:
    problems = _problems({
        "sms": {"upstreams": [{"name": "a", "url": "ftp://x", "user_name": "u", "password_env": "NOPE"},
                              {"name": "a", "url": "https://y", "user_name": "u", "password": "p"}],
                "alternate_senders": {"98": ["+13125550100"], "98765": [13125550100, "3125550100"]},
                "colour": "blue"},
        "callbacks": {"allow_networks": ["10.0.0.0/33"]},
    })
    text = "\n".join(problems)
    for expected in ("sms.upstreams[0].password_env: NOPE is not set", "sms.upstreams[0].url",
                     "sms.upstreams[1].name: 'a' is used by more than one upstream",
                     "sms.alternate_senders.98: a short code is 3 to 8 digits",
                     "sms.alternate_senders.98765[0]: must be a non-empty string",
                     "sms.alternate_senders.98765[1]: '3125550100' is not an E.164",
                     "sms.colour: unknown key", "callbacks.allow_networks[0]"):
        assert expected in text, text


def test_alternate_senders_must_be_a_mapping() -> None:
    assert "sms.alternate_senders: must be a mapping" in _problems({"sms": {"alternate_senders": ["98765"]}})
