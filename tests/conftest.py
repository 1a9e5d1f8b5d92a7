"""Suite-wide settings: keep every Ray instance the tests start on 127.0.0.1."""

import os

# Ray then binds a local instance to 127.0.0.1 instead of this machine's non-loopback interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
