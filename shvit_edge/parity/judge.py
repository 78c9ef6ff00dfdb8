"""The verdict on parity metrics: what in them breaks a tolerance (verify's judge)."""

from __future__ import annotations

from ..targets import Tolerance
from .metrics import ParityMetrics


def judge(metrics: ParityMetrics, tolerance: Tolerance) -> list[str]:
    """What in ``metrics`` breaks ``tolerance`` (empty: it passes). An output or a reference that does not depend
    on its input fails whatever the numbers: it would match an equally constant counterpart perfectly."""
    problems = []
    if metrics.reference_constant:
        problems.append(f"the reference model's output does not depend on its input "
                        f"({metrics.reference_constant}): no comparison with it can show the artifact works; "
                        "check the checkpoint's weights")
    if not metrics.finite:
        return [*problems, "NaN or Inf in the output"]
    if metrics.output_constant:
        problems.append(f"the artifact's output does not depend on its input ({metrics.output_constant})")
    # each check is written as "not within", so a NaN metric (a NaN in the reference: ``finite`` is the output's)
    # fails it; every comparison with NaN is False, and ``nan > bar`` would pass
    if not metrics.cosine >= tolerance.cosine:
        problems.append(f"cosine {metrics.cosine:.6f} < {tolerance.cosine}")
    if not metrics.max_abs <= tolerance.max_abs:
        problems.append(f"max abs {metrics.max_abs:.3g} > {tolerance.max_abs}")
    if not metrics.top1_agreement >= tolerance.top1_agreement:
        problems.append(f"top-1 agreement {metrics.top1_agreement:.3f} < {tolerance.top1_agreement}")
    if tolerance.sqnr_db is not None and not metrics.sqnr_db >= tolerance.sqnr_db:
        problems.append(f"SQNR {metrics.sqnr_db:.1f} dB < {tolerance.sqnr_db} dB")
    return problems
