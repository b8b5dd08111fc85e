"""The wire codec: every type round-trips; every kind of garbage is a DecodeError."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.block import Block
from messages.wire import (
    DECODE_ERROR_KINDS,
    MAX_DATAGRAM_BYTES,
    Announce,
    Consensus,
    DecodeError,
    GetBlock,
    GetBlockReply,
    Gossip,
    GossipReply,
    NewWord,
    Stats,
    StatsReply,
    decode,
    encode,
)
from tests.helpers import real_blocks

BLOCK = real_blocks()[1]

ALL_MESSAGES = [
    Gossip("127.0.0.1", 8999, "5f1c", "alice"),
    GossipReply("127.0.0.1", 8999, "bob"),
    GetBlock(7),
    GetBlockReply(BLOCK),
    GetBlockReply(None),
    Announce(BLOCK),
    Stats(),
    StatsReply(2, BLOCK.hash),
    StatsReply(0, None),
    Consensus(),
    NewWord("hello"),
]


@pytest.mark.parametrize("message", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message):
    assert decode(encode(message)) == message


def test_exact_wire_format():
    assert encode(Stats()) == b'{"type":"STATS"}'
    assert encode(GetBlock(3)) == b'{"type":"GET_BLOCK","height":3}'
    assert encode(StatsReply(0, None)) == b'{"type":"STATS_REPLY","height":0,"hash":null}'
    assert json.loads(encode(GetBlockReply(None))) == {
        "type": "GET_BLOCK_REPLY", "height": None, "minedBy": None, "messages": None,
        "nonce": None, "timestamp": None, "hash": None,
    }
    assert json.loads(encode(Gossip("h", 1, "i", "n"))) == {"type": "GOSSIP", "host": "h", "port": 1, "id": "i", "name": "n"}
    wire = json.loads(encode(Announce(BLOCK)))
    assert wire == {"type": "ANNOUNCE", **BLOCK.to_wire()}


def test_non_ascii_is_sent_as_utf8():
    data = encode(NewWord("héllo"))
    assert "héllo".encode() in data


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"\xff\xfe\x00", "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"STATS"', "not_object"),
        (b'{"type": "NOPE"}', "unknown_type"),
        (b'{"no_type": 1}', "unknown_type"),
        (b'{"type": 5}', "unknown_type"),
        (b'{"type": "GET_BLOCK"}', "bad_field"),
        (b'{"type": "GET_BLOCK", "height": "3.0"}', "bad_field"),
        (b'{"type": "GET_BLOCK", "height": " 3"}', "bad_field"),
        (b'{"type": "GET_BLOCK", "height": "-1"}', "bad_field"),
        (b'{"type": "GET_BLOCK", "height": "\xd9\xa3"}', "bad_field"),  # an Arabic-Indic 3: str.isdigit(), not ASCII
        (b'{"type": "GET_BLOCK", "height": "' + b"9" * 20 + b'"}', "bad_field"),  # too many digits to be read
        (b'{"type": "GET_BLOCK", "height": -1}', "bad_field"),
        (b'{"type": "GET_BLOCK", "height": true}', "bad_field"),
        (b'{"type": "GET_BLOCK", "height": 1.5}', "bad_field"),
        (b'{"type": "GOSSIP", "host": "127.0.0.1", "port": 70000, "id": "x", "name": "n"}', "bad_port"),
        (b'{"type": "NEW_WORD", "word": 5}', "bad_word"),
        (b'{"type": "STATS_REPLY", "height": "x", "hash": null}', "bad_field"),
        (b'{"type": "STATS_REPLY", "height": "' + b"9" * 5000 + b'", "hash": null}', "bad_field"),
        (b"[" * 4000 + b"]" * 4000, "not_json"),
        (b'{"type": "GET_BLOCK", "height": ' + b"9" * 5000 + b"}", "not_json"),
        (b" " * (MAX_DATAGRAM_BYTES + 1), "too_long"),
    ],
    ids=lambda v: v[:30].decode("latin-1") if isinstance(v, bytes) else v,
)
def test_malformed_input_gives_a_specific_error(data, kind):
    assert len(data) > MAX_DATAGRAM_BYTES or kind != "too_long"
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": -1},
        {"timestamp": 1.5},
        {"timestamp": "1699295268"},
        {"timestamp": 2**63},
        {"messages": [1, 2]},
        {"messages": ["m"] * 11},
        {"messages": ["x" * 21]},
        {"nonce": "1" * 41},
        {"hash": "ABC"},
        {"minedBy": None},
        {"messages": "not a list"},
    ],
)
def test_bad_block_fields_are_refused_by_the_codec(change):
    wire = {"type": "ANNOUNCE", **BLOCK.to_wire(), **change}
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(wire).encode())
    assert info.value.kind == "bad_field"


def test_int_nonce_is_read_as_its_decimal_string():
    wire = {"type": "ANNOUNCE", **BLOCK.to_wire(), "nonce": int(BLOCK.nonce)}
    assert decode(json.dumps(wire).encode()) == Announce(BLOCK)


def test_extra_keys_are_ignored():
    assert decode(b'{"type": "STATS", "extra": [1, 2, 3]}') == Stats()


# ------------------------------------------------------------------ property-based

@settings(max_examples=2000)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_decode_error(data):
    try:
        decode(data)
    except DecodeError as exc:
        assert exc.kind in DECODE_ERROR_KINDS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=10,
)
field_names = st.sampled_from(["type", "height", "hash", "host", "port", "id", "name", "word", "minedBy", "messages", "nonce", "timestamp"])
type_names = st.sampled_from(["GOSSIP", "GOSSIP_REPLY", "GET_BLOCK", "GET_BLOCK_REPLY", "ANNOUNCE", "STATS", "STATS_REPLY", "CONSENSUS", "NEW_WORD", "OTHER"])


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(type_names, st.dictionaries(field_names, json_values, max_size=8))
def test_random_valid_looking_json_never_escapes(kind, fields):
    obj = {**fields, "type": kind}
    try:
        message = decode(json.dumps(obj).encode())
    except DecodeError:
        return
    # Whatever decodes must encode back to something that decodes the same.
    assert decode(encode(message)) == message


@settings(max_examples=300)
@given(
    st.text(max_size=20),
    st.lists(st.text(max_size=20), max_size=10),
    st.text(alphabet="0123456789", min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=10**6),
)
def test_any_block_within_limits_round_trips(mined_by, messages, nonce, timestamp, height):
    block = Block(height, mined_by, tuple(messages), nonce, timestamp, "0" * 64)
    try:
        "".join([mined_by, *messages]).encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates can't go on the wire as UTF-8
    assert decode(encode(Announce(block))) == Announce(block)


# ------------------------------------------------------------------ poison strings (issue 11)

GOSSIP_OK = {"type": "GOSSIP", "host": "127.0.0.1", "port": 8999, "id": "5f1c", "name": "alice"}


@pytest.mark.parametrize(
    "change, kind",
    [
        ({"host": "\ud800"}, "bad_host"),
        ({"host": "127.0.0.1\u0000"}, "bad_host"),
        ({"host": "\u0080"}, "bad_host"),
        ({"host": "xn--\u00e9"}, "bad_host"),
        ({"host": "localhost"}, "bad_host"),
        ({"host": "silicon.cs.umanitoba.ca"}, "bad_host"),
        ({"host": "fe80::1%eth0"}, "bad_host"),
        ({"host": "127.000.0.1"}, "bad_host"),
        ({"host": ""}, "bad_host"),
        ({"host": 2130706433}, "bad_host"),
        ({"port": 0}, "bad_port"),
        ({"port": 65536}, "bad_port"),
        ({"port": True}, "bad_port"),
        ({"port": "8999"}, "bad_port"),
        ({"name": "\ud800"}, "bad_text"),
        ({"name": "a\u0000b"}, "bad_text"),
        ({"name": "a\nb"}, "bad_text"),
        ({"name": "x" * 65}, "bad_field"),
        ({"id": "\udfff"}, "bad_text"),
        ({"id": "x" * 129}, "bad_field"),
    ],
)
def test_gossip_poison_fields_are_refused_with_their_reason(change, kind):
    wire = json.dumps({**GOSSIP_OK, **change}).encode()
    with pytest.raises(DecodeError) as info:
        decode(wire)
    assert info.value.kind == kind
    reply = json.dumps({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": 1, "name": "n", **{k: v for k, v in change.items() if k != "id"}}).encode()
    if "id" not in change:
        with pytest.raises(DecodeError) as info:
            decode(reply)
        assert info.value.kind == kind


@pytest.mark.parametrize("word", ["\ud800", "", "x" * 21, "a\u0000", "tab\there", "\u202e"])
def test_poison_new_words_are_refused(word):
    with pytest.raises(DecodeError) as info:
        decode(json.dumps({"type": "NEW_WORD", "word": word}).encode())
    assert info.value.kind == "bad_word"


def test_hosts_are_canonical_ip_literals():
    assert decode(json.dumps({**GOSSIP_OK, "host": "0:0::1"}).encode()).host == "::1"
    assert decode(json.dumps({**GOSSIP_OK, "host": "10.1.2.3"}).encode()).host == "10.1.2.3"
    assert decode(json.dumps({"type": "NEW_WORD", "word": "héllo wörld"}).encode()) == NewWord("héllo wörld")


def test_block_with_a_lone_surrogate_is_refused():
    wire = {"type": "ANNOUNCE", **BLOCK.to_wire(), "minedBy": "\ud800"}
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(wire).encode())
    assert info.value.kind == "bad_text"


@settings(max_examples=500)
@given(st.text(max_size=30), st.integers(min_value=-5, max_value=70000), st.text(max_size=30), st.text(max_size=30))
def test_whatever_gossip_decodes_is_safe_to_send_store_and_forward(host, port, gossip_id, name):
    """Anything that decodes can be encoded, sent to (no DNS: an IP literal) and stored."""
    import ipaddress
    try:
        message = decode(json.dumps({"type": "GOSSIP", "host": host, "port": port, "id": gossip_id, "name": name}).encode())
    except DecodeError:
        return
    ipaddress.ip_address(message.host)
    assert 1 <= message.port <= 65535
    for text in (message.id, message.name):
        text.encode("utf-8")
        assert text.isprintable()
    assert decode(encode(message)) == message


# ---------------------------------------------------------------- real-peer quirks and the height bound (issue 10)


def test_stats_reply_with_height_null_is_an_empty_chain():
    from messages.wire import StatsReply, decode

    assert decode(b'{"type":"STATS_REPLY","height":null,"hash":null}') == StatsReply(0, None)


def test_get_block_reply_of_none_strings_means_no_such_block():
    from messages.wire import GetBlockReply, decode

    fields = dict.fromkeys(("height", "minedBy", "messages", "nonce", "timestamp", "hash"), "None")
    assert decode(json.dumps({"type": "GET_BLOCK_REPLY", **fields}).encode()) == GetBlockReply(None)


def test_heights_above_2_63_minus_1_are_refused_by_the_codec():
    from messages.wire import MAX_HEIGHT, DecodeError, GetBlock, decode

    assert decode(b'{"type":"GET_BLOCK","height":%d}' % MAX_HEIGHT) == GetBlock(MAX_HEIGHT)
    for raw in (b'{"type":"GET_BLOCK","height":%d}' % (MAX_HEIGHT + 1),
                b'{"type":"STATS_REPLY","height":%d,"hash":null}' % (MAX_HEIGHT + 1),
                b'{"type":"STATS_REPLY","height":%s,"hash":null}' % (b"9" * 4000),
                b'{"type":"ANNOUNCE","height":%s,"minedBy":"a","messages":[],"nonce":"1","timestamp":1,"hash":"%s"}' % (b"9" * 4000, b"0" * 64)):
        with pytest.raises(DecodeError) as caught:
            decode(raw)
        assert caught.value.kind == "bad_field" and len(str(caught.value)) < 200


# ---------------------------------------------------------------- liberal to honest peers (issue 19)

TOP = "ab" * 31 + "00"


def test_hyphenated_gossip_reply_is_read_as_gossip_reply():
    from messages.wire import GossipReply, decode

    raw = b'{"type":"GOSSIP-REPLY","host":"127.0.0.1","port":8000,"name":"rubric"}'
    assert decode(raw) == GossipReply("127.0.0.1", 8000, "rubric")


@pytest.mark.parametrize("raw, expected", [
    (b'{"type":"STATS_REPLY","height":"12","hash":"%s"}' % TOP.encode(), (12, TOP)),
    (b'{"type":"STATS_REPLY","height":"0","hash":null}', (0, None)),
    (b'{"type":"STATS_REPLY","height":"%d","hash":null}' % (2**63 - 1), (2**63 - 1, None)),
])
def test_numeric_string_heights_in_stats_reply_are_numbers(raw, expected):
    from messages.wire import StatsReply, decode

    assert decode(raw) == StatsReply(*expected)


def test_numeric_string_heights_in_get_block_and_blocks_are_numbers():
    from messages.wire import Announce, GetBlock, GetBlockReply, decode

    assert decode(b'{"type":"GET_BLOCK","height":"7"}') == GetBlock(7)
    for kind, wrap in (("ANNOUNCE", Announce), ("GET_BLOCK_REPLY", GetBlockReply)):
        wire = {"type": kind, **BLOCK.to_wire(), "height": str(BLOCK.height)}
        assert decode(json.dumps(wire).encode()) == wrap(BLOCK)


def test_numeric_string_heights_are_bounded():
    from messages.wire import MAX_HEIGHT_DIGITS, DecodeError, decode

    for height in ("9" * (MAX_HEIGHT_DIGITS + 1), "9" * MAX_HEIGHT_DIGITS, "9" * 4000, "1e3", "0x1", "+1", "1_0", ""):
        with pytest.raises(DecodeError) as caught:  # 19 nines is above 2**63 - 1: out of range
            decode(json.dumps({"type": "GET_BLOCK", "height": height}).encode())
        assert caught.value.kind == "bad_field" and len(str(caught.value)) < 200


@pytest.mark.parametrize("bad_hash", [5, 1.5, True, "", "None", "ABC", "A" * 64, "xyz", "0" * 63, "0" * 65, "0" * 5000,
                                      [TOP], {"h": TOP}])
def test_an_unusable_hash_in_stats_reply_is_no_claim_and_the_height_stays(bad_hash):
    from messages.wire import DecodeError, StatsReply, decode

    assert decode(json.dumps({"type": "STATS_REPLY", "height": 9, "hash": bad_hash}).encode()) == StatsReply(9, None)
    with pytest.raises(DecodeError):  # no hash field at all is still malformed
        decode(b'{"type":"STATS_REPLY","height":"9"}')
