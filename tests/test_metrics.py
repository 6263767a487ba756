import numpy as np
import pytest

from training.metrics import ndcg_at_k, recall_at_k


def test_recall_hand_computed():
    recs = np.array([[1, 2, 3], [4, 5, 6]])
    truth = [{2, 9}, {7}]
    # user 0: 1 hit / min(3, 2) = 0.5 ; user 1: 0 / 1
    assert recall_at_k(recs, truth, k=3) == pytest.approx(0.25)


def test_ndcg_hand_computed():
    recs = np.array([[1, 2, 3]])
    truth = [{2, 3}]
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    idcg = 1 / np.log2(2) + 1 / np.log2(3)
    assert ndcg_at_k(recs, truth, k=3) == pytest.approx(dcg / idcg)


def test_perfect_and_empty_lists():
    assert ndcg_at_k(np.array([[5, 6]]), [{5, 6}], k=2) == pytest.approx(1.0)
    assert ndcg_at_k(np.array([[-1, -1]]), [{5}], k=2) == 0.0


def test_empty_truth_is_an_error():
    with pytest.raises(ValueError, match="non-empty truth"):
        recall_at_k(np.array([[1]]), [set()], k=1)
