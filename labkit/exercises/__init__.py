"""Graded "your turn" exercises, one or more per lab: ``labkit.exercises.check_<name>(answer)``.

Most exercises ask for a function (``def lora_count(m, n, r): return ...``): the check calls it on
inputs of its own, which the learner does not choose, so an answer that ignores its input cannot pass
(see :mod:`labkit.exercises.functions`). Each lab's cell ships with ``...`` in place of the answer; the
check says *not attempted yet*, *right*, or *not yet* with a hint that points at the mistake without
giving the answer (see :mod:`labkit.exercises.common`). The solutions live beside the checks
(``labkit/exercises/labNN.py``, ``SOLUTIONS``): look only when stuck.
"""
from labkit.exercises.common import Verdict, grade  # noqa: F401 (re-exported)
from labkit.exercises.lab00 import *  # noqa: F401,F403
from labkit.exercises.lab01 import *  # noqa: F401,F403
from labkit.exercises.lab02 import *  # noqa: F401,F403
from labkit.exercises.lab03 import *  # noqa: F401,F403
from labkit.exercises.lab04 import *  # noqa: F401,F403
from labkit.exercises.lab05 import *  # noqa: F401,F403
from labkit.exercises.lab06 import *  # noqa: F401,F403
from labkit.exercises.lab07 import *  # noqa: F401,F403
from labkit.exercises.lab08 import *  # noqa: F401,F403
