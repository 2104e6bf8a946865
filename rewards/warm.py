"""Imported by the grading pool's forkserver: math-verify's LaTeX parser warmed up once.

latex2sympy's ANTLR parser builds its prediction tables lazily, per construct, at
hundreds of milliseconds each the first time; a worker forked afterwards inherits
them. Without this every fresh (or restarted) worker pays that again on its first
answers, which costs more than the grading itself.
"""

from __future__ import annotations

from .mathgrade import verify_equal

#: one of each construct real answers use: numbers, fractions, surds, powers, π,
#: intervals and unions, sets, tuples, equations, text, degrees, percents, matrices
_SAMPLES = (
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("2^{10} - 3\\pi", "1024-3\\pi"),
    ("(2,12) \\cup (12,102)", "[0, \\infty)"),
    ("\\{1, 2\\}", "(3, -1)"),
    ("y = 2x + 3", "x^2 - 4x + 4"),
    ("\\text{(C)}", "\\text{Navin}"),
    ("30^\\circ", "50\\%"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "1 \\pm \\sqrt{19}"),
    ("1 - 12i", "\\dfrac{14}{3}"),
)

for _gold, _answer in _SAMPLES:
    verify_equal(_gold, _answer)
