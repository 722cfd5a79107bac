"""Hypothesis strategies shared by the fuzz tests (gateway bodies, websocket messages)."""

from __future__ import annotations

from hypothesis import strategies as st


def scalars(int_bound: int):
    """Any JSON scalar, integers within ±int_bound."""
    return (
        st.none()
        | st.booleans()
        | st.integers(-int_bound, int_bound)
        | st.floats()
        | st.text(max_size=30)
    )


def json_values(scalar_values):
    """Small JSON documents (lists and objects, a dozen leaves at most) of `scalar_values`."""
    return st.recursive(
        scalar_values,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=12,
    )
