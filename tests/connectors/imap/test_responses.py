"""Pure IMAP wire helpers: UIDVALIDITY, the "n:*" gotcha, literals among stray FETCHes, names."""

from __future__ import annotations

from connectors.imap.responses import (
    encode_mailbox,
    has_new_mail,
    is_bye,
    literal_for_uid,
    uid_sizes,
    uidnext,
    uidvalidity,
)


def test_select_response_values() -> None:
    lines = [
        b"FLAGS (\\Answered \\Seen)",
        b"3 EXISTS",
        b"OK [UIDVALIDITY 1795351399] UIDs valid",
        b"OK [UIDNEXT 9] Predicted next UID",
    ]
    assert uidvalidity(lines) == 1795351399
    assert uidnext(lines) == 9
    assert uidvalidity([b"OK done"]) is None and uidnext([]) is None


def test_uid_range_star_returns_old_highest_uid_which_is_filtered() -> None:
    # "UID FETCH 8:*" on a mailbox whose highest UID is 7 still answers with UID 7.
    assert uid_sizes([b"5 FETCH (UID 7 RFC822.SIZE 773)", b"Fetch completed"], after=7) == []
    lines: list[bytes | bytearray] = [
        b"6 FETCH (UID 9 RFC822.SIZE 100)",
        b"5 FETCH (RFC822.SIZE 50 UID 8)",  # servers may order items either way
        b"2 FETCH (FLAGS (\\Seen))",
        bytearray(b"ignored literal"),
    ]
    assert uid_sizes(lines, after=7) == [(8, 50), (9, 100)]


def test_literal_is_taken_only_from_the_right_fetch_line() -> None:
    lines: list[bytes | bytearray] = [
        b"1 FETCH (FLAGS (\\Seen) UID 3)",
        b"4 FETCH (UID 12 BODY[] {5}",
        bytearray(b"hello"),
        b")",
        b"Fetch completed",
    ]
    assert literal_for_uid(lines, 12) == b"hello"
    assert literal_for_uid(lines, 3) is None
    assert literal_for_uid([b"Fetch completed"], 12) is None


def test_idle_pushes() -> None:
    assert has_new_mail([b"4 EXISTS", b"1 RECENT"])
    assert not has_new_mail([b"3 EXPUNGE", b"2 FETCH (FLAGS (\\Seen))"])
    assert is_bye([b"BYE Server shutting down."])
    assert not is_bye([b"4 EXISTS"])


def test_mailbox_names_are_quoted_and_utf7_encoded() -> None:
    assert encode_mailbox("INBOX") == '"INBOX"'
    assert encode_mailbox("Kunden & Partner") == '"Kunden &- Partner"'
    assert encode_mailbox("Entwürfe") == '"Entw&APw-rfe"'
    assert encode_mailbox("日本") == '"&ZeVnLA-"'
    assert encode_mailbox('a"b\\c') == '"a\\"b\\\\c"'
