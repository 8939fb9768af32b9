"""Receipts: what ``Message.receipt`` holds, made and read here.

A receipt is ``<id>.<token>``, plus ``r`` for a request's message or ``e`` for one
whose events are published: from it the client knows which reply keys to pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rqueue._protocol import codec as _codec
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.limits import batch

#: A message's flag (codec) -> its receipt's suffix.
_TRACKED_SUFFIX = {"": "", _codec.REQUEST: "r", _codec.EVENTS: "e"}
#: The same by the stored byte (the one after sent_at), as the receive path reads it.
SUFFIX_OF_BYTE = {ord(_codec.REQUEST): "r", ord(_codec.EVENTS): "e"}

#: Untracked receipts joined by spaces, as the delete script takes them in one argument.
PLAIN_RECEIPTS = re.compile(r"\d{1,20}\.\d{1,20}(?: \d{1,20}\.\d{1,20})*", re.ASCII)


def make_receipt(message_id: str, token: str, flag: str) -> str:
    """The receipt of a received message; ``flag`` is the codec's (''/REQUEST/EVENTS)."""
    return f"{message_id}.{token}{_TRACKED_SUFFIX[flag]}"


def parse_receipt(receipt: object) -> tuple[str, str, str]:
    """(id, token, tracked) of a receipt from ``Message.receipt``; tracked is '', 'r' or 'e'.

    ``<1-20 digits>.<1-20 digits>[re]``, checked without a regex: it runs per ack.
    """
    if isinstance(receipt, str) and receipt.isascii():
        mid, _, token = receipt.partition(".")
        tracked = token[-1:] if token[-1:] in ("r", "e") else ""
        if tracked:
            token = token[:-1]
        if 0 < len(mid) <= 20 and 0 < len(token) <= 20 and mid.isdigit() and token.isdigit():
            return mid, token, tracked
    raise InvalidParameter(f"receipt must be a Message.receipt string, got {receipt!r}")


def split_receipt(receipt: object) -> tuple[str, str]:
    """(id, token) of a receipt from ``Message.receipt``."""
    mid, token, _ = parse_receipt(receipt)
    return mid, token


def receipt_args(receipts: Iterable[str]) -> list[str]:
    """A batch of receipts as the scripts take them: id, token, id, token, ..."""
    args: list[str] = []
    for r in batch("receipts", receipts):
        args.extend(split_receipt(r))
    return args
