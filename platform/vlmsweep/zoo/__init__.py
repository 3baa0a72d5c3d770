"""zoo layer of vlmsweep."""
