"""The model matrix: the fast category lookup answers exactly like the cleaning path."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from customer360.models.tabular import TableSchema, category_codes, clean_text, to_matrix

LEVELS = ("B2B", "B2C", "north", "n/a")


def _slow_codes(values: pd.Series, levels) -> np.ndarray:
    codes = pd.Categorical(clean_text(values), categories=list(levels)).codes
    return np.where(codes < 0, np.nan, codes).astype(float)


def test_known_answers_with_spaces_tokens_and_unseen_levels():
    values = pd.Series(["B2C", " B2B ", "", "NA", None, "south", "north", "n/a"], dtype=object)
    codes = category_codes(values, LEVELS)
    np.testing.assert_array_equal(codes, _slow_codes(values, LEVELS))
    assert codes[0] == 1 and codes[1] == 0 and codes[6] == 2
    assert np.isnan(codes[[2, 3, 4, 5]]).all()


@given(
    st.lists(
        st.one_of(
            st.sampled_from([*LEVELS, " B2C", "north  ", "", " ", "nan", "None", "x"]),
            st.none(),
            st.text(max_size=4),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_fast_lookup_equals_cleaning_path(raw):
    values = pd.Series(raw, dtype=object)
    np.testing.assert_array_equal(category_codes(values, LEVELS), _slow_codes(values, LEVELS))


def test_matrix_keeps_schema_order_with_mixed_dtypes():
    frame = pd.DataFrame(
        {"kind": ["B2C", "B2B"], "n": pd.array([1, 2], dtype="int64"), "x": [0.5, np.nan],
         "txt": [" 1,234.5 ", "7"]}
    )
    schema = TableSchema(columns=("x", "kind", "txt", "n"), categories={"kind": LEVELS}, notes=())
    out = to_matrix(frame, schema)
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, [[0.5, 1, 1234.5, 1], [np.nan, 0, 7, 2]])
