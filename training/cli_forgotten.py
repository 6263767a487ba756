"""The forgotten list as the command-line exports honour it: a shopper erased with ``shoprec forget-user`` leaves
every list a command writes (``churn-list``, ``segments``, ``score-all``) at once, as they leave the service's answers,
although the published bundles still hold them until the next training.

    gone = forgotten_mask(ids)     # bool per id; exit 2 when the list exists but cannot be read (no key)
"""
from __future__ import annotations

import numpy as np

from training.cli_errors import fail


def forgotten_mask(user_ids) -> np.ndarray:
    """Which of ``user_ids`` are on the forgotten list (``SHOPREC_PRIVACY_DIR``, default data/privacy). A list
    that exists but cannot be honoured (its key missing) stops the export: better nothing than an erased customer."""
    from features.privacy import ForgetList, PrivacyError

    try:
        forgotten = ForgetList.open()
    except PrivacyError as e:
        fail(f"{e}: the export would not leave forgotten shoppers out")
    return forgotten.mask(list(user_ids))
