"""Group-sequential tests: bounds that spend exactly alpha over a planned horizon, however often it is read.

A two-sided test of an effect's z statistic at looks k = 1, 2, ... with information I_k (proportional to
the units so far) and spending times t_k in (0, 1] (the share of the planned horizon that has passed: days
elapsed / planned days, or units / planned units). By look k the test has spent alpha(t_k) of its type I
error, from a Lan-DeMets spending function (Lan & DeMets 1983, Biometrika 70; calendar-time spending: Lan &
DeMets 1989, Biometrics 45):

- ``obrien_fleming``: each side spends 2 - 2 Phi(z_{1-alpha/4} / sqrt(t)), the one-sided function at
  alpha/2 (as gsDesign's sfLDOF with a two-sided symmetric design, ldbounds and Spotify's confidence): little
  early, nearly all at the end (4 equal looks: 4.33, 2.96, 2.36, 2.01), so the power at the horizon is nearly
  that of a fixed test;
- ``pocock``: alpha(t) = alpha ln(1 + (e - 1) t), evenly.

The bound b_k solves P(|Z_j| < b_j for j < k, |Z_k| >= b_k) = alpha(t_k) - alpha(t_{k-1}) with no effect,
where (Z_1, Z_2, ...) is the canonical joint normal, corr(Z_j, Z_k) = sqrt(I_j / I_k) (Jennison & Turnbull,
"Group Sequential Methods", 2000, ch. 7 and 19). The looks need not be planned: any number, at any times;
alpha a look did not use is spent at the next one, and once t reaches 1 all of it is spent. The density of
the statistic on the continuation region comes from gsdesign (Nan Xiao's port of the gsDesign C routines:
Simpson grids, ``h1``/``hupdate``); a candidate bound's crossing probability is that density's grid sum of
the normal tail (as gsDesign's gsbound), and scipy's ``brentq`` finds the bound. The repeated confidence
interval effect +/- b_k se covers the true effect at all looks at once with probability >= 1 - alpha.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from gsdesign import h1, hupdate
from scipy.optimize import brentq
from scipy.stats import norm

SPENDING = ("obrien_fleming", "pocock")
GRID_R = 18  # gsDesign's default grid size (about 6r points per look; error well below 1e-6)


def alpha_spent(t, alpha: float, spending: str = "obrien_fleming"):
    """Cumulative type I error spent by spending time ``t`` (clipped to [0, 1]); arrays work."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if spending == "obrien_fleming":
        with np.errstate(divide="ignore"):
            out = 4.0 * norm.sf(norm.isf(alpha / 4.0) / np.sqrt(t))  # 2 sides x (2 - 2 Phi), kept exact when tiny
        return np.where(t > 0, out, 0.0)
    if spending == "pocock":
        return alpha * np.log1p((math.e - 1.0) * t)
    raise ValueError(f"spending {spending!r}: expected one of {', '.join(SPENDING)}")


@dataclass(frozen=True)
class Look:
    t: float  # spending time, in [0, 1]
    info: float  # information (units)
    bound: float  # |z| >= bound rejects; inf when this look has no alpha to spend
    spent: float  # cumulative alpha spent by this look

    @property
    def nominal_alpha(self) -> float:
        """The two-sided p-value below which this look rejects."""
        return 0.0 if math.isinf(self.bound) else float(2.0 * norm.sf(self.bound))


class GroupSequential:
    """A two-sided group-sequential test read one look at a time (``look`` returns its z bound). The state
    between looks is the sub-density of Z on the region where no earlier look rejected."""

    def __init__(self, alpha: float = 0.05, spending: str = "obrien_fleming", r: int = GRID_R):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha {alpha!r}: expected a number in (0, 1)")
        alpha_spent(0.5, alpha, spending)  # validates the name
        self.alpha, self.spending, self.r = alpha, spending, r
        self.looks: list[Look] = []
        self._grid = None  # (z, w, h) from gsdesign

    def look(self, t: float, info: float) -> float:
        """The bound at the next look, at spending time ``t`` with information ``info``: both must grow
        (``t`` may stay at 1). Adds the look to the test's history."""
        prev = self.looks[-1] if self.looks else None
        if not info > 0 or (prev is not None and info <= prev.info):
            raise ValueError(f"information {info!r} at look {len(self.looks) + 1}: must be positive and grow "
                             f"(previous {prev.info if prev else None})")
        if prev is not None and t < prev.t:
            raise ValueError(f"spending time {t!r} at look {len(self.looks) + 1}: must not fall (previous {prev.t})")
        target = float(alpha_spent(t, self.alpha, self.spending))
        done = prev.spent if prev else 0.0
        step = target - done
        if prev is None:
            bound = float(norm.isf(step / 2.0)) if step > 0 else math.inf
            self._grid = h1(self.r, 0.0, info, -bound, bound)
        else:
            bound = self._solve(step, prev.info, info) if step > 0 else math.inf
            self._grid = hupdate(self.r, 0.0, info, -bound, bound, 0.0, prev.info, self._grid)
        self.looks.append(Look(float(t), float(info), bound, target if math.isfinite(bound) else done))
        return bound

    def _solve(self, step: float, info_prev: float, info: float) -> float:
        z_prev, _, h_prev = self._grid
        shift = z_prev * math.sqrt(info_prev)
        scale = math.sqrt(info - info_prev)

        def crossing(b: float) -> float:  # both tails, by symmetry
            return 2.0 * float(np.dot(h_prev, norm.sf((b * math.sqrt(info) - shift) / scale))) - step

        if crossing(0.0) <= 0:  # less mass left than the step (numerical edge): reject everything left
            return 0.0
        return float(brentq(crossing, 0.0, 40.0, xtol=1e-10))


def chained_information(first: float, correlations) -> np.ndarray:
    """Information at each look from the correlation of the effect's estimates at consecutive looks:
    I_1 = ``first``, I_k = I_{k-1} / rho_k^2. With independent increments (a mean over more units of
    outcomes that are final) rho_k^2 = I_{k-1} / I_k and this is the usual information; when outcomes
    mature between looks (a shopper who had not bought yesterday buys today) consecutive estimates are
    less correlated than the units alone say (a test built on units alone then spends more than alpha).
    With these informations the canonical recursion has corr(Z_{k-1}, Z_k) = rho_k exactly and, for looks
    farther apart, the product of the consecutive ones (a Markov approximation; exact for a binary
    outcome that matures at the same pace in every shopper). rho is clipped to [0.05, 1 - 1e-9]."""
    rho = np.clip(np.asarray(correlations, dtype=float), 0.05, 1.0 - 1e-9)
    return float(first) * np.concatenate([[1.0], np.cumprod(1.0 / rho ** 2)])


def bounds(times, infos, alpha: float = 0.05, spending: str = "obrien_fleming") -> list[Look]:
    """All looks of a test at once (``GroupSequential.look`` for each)."""
    gs = GroupSequential(alpha, spending)
    for t, i in zip(times, infos):
        gs.look(float(t), float(i))
    return gs.looks
