"""`nst run` (`python -m tests.pipeline.compaction_kill_driver run …`) whose first ledger compaction stops
for good after writing its merged part and deleting one of the parts it merged, so that a test can SIGKILL
the driver there: in the middle of a compaction, where copies of records exist in two parts.

The fan-in is 2 (a merge every second flush) so that a short run compacts at all; the file named by
`$NST_COMPACTION_MARKER` appears when the driver has reached that point.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pipeline.cli.app import main
from pipeline.store import compaction, ledger

compaction.FAN_IN = 2
_real_bounded = ledger.bounded
_deletes = [0]


def _stalling_bounded(fs: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    if method == "rm_file":
        _deletes[0] += 1
        if _deletes[0] == 2:
            with open(os.environ["NST_COMPACTION_MARKER"], "w"):
                pass
            time.sleep(3600)
    return _real_bounded(fs, method, *args, **kwargs)


ledger.bounded = _stalling_bounded  # type: ignore[assignment]

if __name__ == "__main__":
    main()
