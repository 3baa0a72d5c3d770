"""argparse value types shared by the command lines (cli.py, serve/chat.py, serve/demo.py): a bad
value is argparse's one-line usage error, exit code 2, naming the flag."""

from __future__ import annotations

import argparse


def int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r}: must be {'a positive' if low else 'a non-negative'} integer")
    return value


def positive_int(text: str) -> int:
    return int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return int_at_least(text, 0)
