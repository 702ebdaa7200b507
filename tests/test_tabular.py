"""The model matrix: the fast category lookup answers exactly like the cleaning path."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
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


# --- the linear part column by column (issue 17: scoring blends without the basis matrix) ------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    knots=st.sampled_from([0, 3, 5]),
    c=st.sampled_from([0.05, 1.0, 50.0]),
)
def test_columnwise_linear_scores_equal_the_pipeline(seed, knots, c):
    """Blanks, values beyond the fitted spline range, unseen levels, a constant column:
    the column-by-column decision equals the sklearn pipeline's to float rounding."""
    from customer360.models.tabular import (
        TableSchema,
        columnwise_linear,
        linear_decision,
        spline_logistic,
    )

    rng = np.random.default_rng(seed)
    n = 400
    X = np.column_stack([
        rng.normal(size=n), rng.gamma(2.0, size=n) * 100, np.full(n, 3.0),  # constant column
        rng.integers(0, 4, n).astype(float), rng.integers(0, 2, n).astype(float),
    ])
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-np.nan_to_num(X[:, 0])))).astype(int)
    y[:2] = [0, 1]
    schema = TableSchema(columns=("a", "b", "k", "cat", "flag"),
                         categories={"cat": ("w", "x", "y", "z"), "flag": ("n", "y")})
    pipe = spline_logistic(schema, c=c, knots=knots).fit(X, y)
    fast = columnwise_linear(pipe)
    assert fast is not None
    Z = rng.normal(size=(300, 5)) * 5
    Z[:, 1] = rng.uniform(-500, 3_000, 300)  # far outside the fitted range on both sides
    Z[:, 3] = rng.integers(-1, 7, 300)  # unseen levels and the blank code
    Z[rng.uniform(size=Z.shape) < 0.15] = np.nan
    expected = pipe.decision_function(Z)
    np.testing.assert_allclose(linear_decision(pipe, Z), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast.decision_function(Z), expected, rtol=1e-10, atol=1e-10)


def test_pipelines_of_another_shape_are_scored_by_themselves():
    from sklearn.linear_model import LogisticRegression

    from customer360.models.tabular import columnwise_linear, linear_decision

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    plain = LogisticRegression().fit(X, y)
    assert columnwise_linear(plain) is None
    np.testing.assert_array_equal(linear_decision(plain, X), plain.decision_function(X))
