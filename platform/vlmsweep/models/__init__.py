"""models layer of vlmsweep."""
