"""Hypothesis strategies for what a client may send: any code point, lone surrogates included
(JSON's "\\ud800" escape decodes to one), and arbitrary JSON built from such text."""

from __future__ import annotations

from hypothesis import strategies as st

any_char = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"]))


def texts(chars=any_char, **size):
    # st.text never yields surrogates (unencodable); joining characters does.
    return st.lists(chars, **size).map("".join)


def json_values(max_text: int, max_items: int, **recursive):
    """Arbitrary JSON: scalars, then lists and objects of up to `max_items` members."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | texts(max_size=max_text),
        lambda inner: (
            st.lists(inner, max_size=max_items)
            | st.dictionaries(texts(max_size=8), inner, max_size=max_items)
        ),
        **recursive,
    )
