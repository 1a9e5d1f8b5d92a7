"""Suite-wide settings. Deliberately nothing about Ray's bind address.

`nst` itself must keep an embedded Ray on 127.0.0.1 (tests/pipeline/test_loopback.py checks it from a
clean environment), so no variable set here may do that job for it. Fixtures that call `ray.init`
themselves set their own loopback settings.
"""

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
