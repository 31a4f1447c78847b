"""Applying a plan: the executor, the order it runs operations in, verification and the report.

``execute`` runs a Plan against a library (executor.py) in the order of ``order.py``, reads back what
the answers leave in doubt (verify.py), and ``report_dict`` turns the result into the ``--report`` JSON.
``stale_facts`` checks a saved plan's live facts before it is applied.
"""

from facesync.apply.executor import execute
from facesync.apply.order import dependencies
from facesync.apply.report import report_dict
from facesync.apply.results import ALREADY, DONE, FAILED, OUTCOMES, SKIPPED, ApplyResult, OpResult
from facesync.apply.verify import VERIFY_MODES, stale_facts, verify_results, wanted_state

__all__ = [
    "ALREADY", "DONE", "FAILED", "OUTCOMES", "SKIPPED", "VERIFY_MODES",
    "ApplyResult", "OpResult",
    "dependencies", "execute", "report_dict", "stale_facts", "verify_results", "wanted_state",
]
