"""A module whose import takes a while: listed in ``imports`` it makes a child's boot slow
(tests that READY=1 waits for a ready child). Registers no handlers."""

import os
import time

time.sleep(float(os.environ.get("SLOWBOOT_SECONDS", "2")))
