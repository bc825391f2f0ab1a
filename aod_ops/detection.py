"""Detection: how well a classifier tells a table from the yardstick rows (a two-sample test).

The choices (see ``docs/architecture.md``, "Metrics contract"): logistic regression (liblinear,
C=10) over standardized numbers and their standardized squares (dates as days; a missing value
becomes the median plus a missing flag; the square lets a linear model see a difference in
spread, such as uniform noise around the real median), one-hot categories and TF-IDF character
1-3-grams of each free-text column (case kept: capitalisation is a tell), preprocessing fitted on
both classes together (it sees no label). The larger class is subsampled to the smaller's size;
the test runs three times (other subsamples, other fold splits) and is averaged, so that a small
batch is not judged by one draw. Stratified k-fold ROC AUC with k = min(5, rows per class), mean
over folds. The raw AUC is reported (below 0.5 is noise around 0.5). With no valid row the AUC
is 1.0 (anything tells an empty table apart); with a single row on either side, or no feature to
learn from, it is 0.5 (nothing can be measured, and validity already counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from aod_ops.columns import CATEGORICAL, CONTINUOUS, Column

# Detection runs (subsamples and fold splits) averaged.
_DETECTION_REPEATS = 3
_FOLDS = 5
# Weak regularisation: with a few dozen rows per class and hundreds of n-gram features, the default
# (C=1) lets the numbers' noise drown a clear free-text difference in the whole-table test.
_C = 10.0


def detection_auc(columns: list[Column], size: tuple[int, int], seed: int) -> float:
    """Cross-validated ROC AUC of a logistic regression telling the table from the yardstick rows."""
    n_table, n_real = size
    if n_table == 0:
        return 1.0
    smaller = min(n_table, n_real)
    if smaller < 2:
        return 0.5
    aucs = []
    for repeat in range(_DETECTION_REPEATS):
        rng = np.random.default_rng(seed + repeat)
        table_rows = np.sort(rng.choice(n_table, smaller, replace=False))
        real_rows = np.sort(rng.choice(n_real, smaller, replace=False))
        features = _features(columns, table_rows, real_rows)
        if features is None:
            return 0.5
        labels = np.r_[np.ones(smaller), np.zeros(smaller)]
        folds = StratifiedKFold(n_splits=min(_FOLDS, smaller), shuffle=True, random_state=seed + repeat)
        for train, test in folds.split(np.zeros(len(labels)), labels):
            model = LogisticRegression(solver="liblinear", C=_C, random_state=seed)
            model.fit(features[train], labels[train])
            aucs.append(_auc(labels[test], model.decision_function(features[test])))
    return float(np.mean(aucs))


def _standard(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): the share of (positive, negative)
    pairs the scores order correctly."""
    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _features(columns: list[Column], table_rows: np.ndarray, real_rows: np.ndarray) -> Any:
    """The feature matrix of the chosen table rows then yardstick rows; None with no feature."""
    blocks: list[Any] = []
    for column in columns:
        if column.kind in CONTINUOUS:
            values = np.r_[column.table[table_rows], column.real[real_rows]]
            missing = np.isnan(values)
            if missing.all():
                continue
            values = np.where(missing, np.nanmedian(values), values)
            scaled = _standard(values)
            # The square lets a linear model see a difference in spread, not only in location.
            parts = [scaled, _standard(scaled**2), *([missing.astype(float)] if missing.any() else [])]
            blocks.append(sp.csr_matrix(np.column_stack(parts)))
        elif column.kind == CATEGORICAL:
            keys = [column.table[i] for i in table_rows] + [column.real[i] for i in real_rows]
            codes: dict[str, int] = {}
            cols = [codes.setdefault(k, len(codes)) for k in keys]
            ones = np.ones(len(keys))
            blocks.append(sp.csr_matrix((ones, (np.arange(len(keys)), cols)), shape=(len(keys), len(codes))))
        else:
            texts = [column.table[i] for i in table_rows] + [column.real[i] for i in real_rows]
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=False)
            try:
                blocks.append(vectorizer.fit_transform(texts))
            except ValueError:  # every text empty: no vocabulary, nothing to learn from
                continue
    return sp.hstack(blocks, format="csr") if blocks else None
