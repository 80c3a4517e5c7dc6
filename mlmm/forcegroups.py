"""The force groups mlmm uses, named in this one place.

Difference splitting for multiple time steps puts the complete MM force field in the fast
group (evaluated every inner step) and the ML correction, ML(region) - MM(region) plus the
embedding's coupling, in the slow group (evaluated every k inner steps). Nothing else in
mlmm hard-codes a group number.
"""

#: complete MM force field, region included: every inner step
MM_FAST = 0
#: ML correction lambda * (ML(region) + coupling - MM(region)): every outer step
ML_SLOW = 1


def group_mask(*groups: int) -> int:
    """Bit mask for ``Context.getState(groups=...)`` selecting the given force groups."""
    mask = 0
    for group in groups:
        mask |= 1 << group
    return mask
