"""The launcher keeps its SIGINT and SIGTERM handlers while the job is submitted (the patch `signals`).

Beam 2.62's job server for Flink takes SIGINT over when it starts
(`StopOnExitJobServer.start`: `signal.signal(SIGINT, self.stop)`, a handler that fails with a
TypeError when called as one), so a Ctrl-C after that stopped the job server and the run was
recorded FAILED, its job left running on the cluster. While the patch is installed (around
`Pipeline.run()` only), code that sets a Python function as the handler of SIGINT or SIGTERM
leaves the current one in place; SIG_IGN and SIG_DFL are still set as asked. The job server is
still stopped at the launcher's exit, as Beam registered it.

Without it (`DATAPREP_BEAM_TUNING=0`, or another Beam version) a Ctrl-C during a Flink run is
Beam's: the run is recorded FAILED, and `runners/cancel.py` still cancels the cluster's job.
"""

import logging
import signal

from runners.tuning import fence

log = logging.getLogger("dataprep")
KEPT = frozenset((signal.SIGINT, signal.SIGTERM))
_ORIGINAL = signal.signal


def _set_handler(signum, handler):
    if signum in KEPT and callable(handler):
        log.debug("left the handler of %s in place (asked for %r)", signal.Signals(signum).name, handler)
        return signal.getsignal(signum)
    return _ORIGINAL(signum, handler)


def install() -> None:
    signal.signal = _set_handler


def uninstall() -> None:
    signal.signal = _ORIGINAL


PATCH = fence.Patch("signals", "the launcher's SIGINT/SIGTERM handlers kept while the job is submitted "
                    "(Beam's Flink job server takes SIGINT with a handler that fails)",
                    (("apache-beam", "2.62.0"),), install, uninstall)
