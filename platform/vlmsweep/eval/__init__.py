"""eval layer of vlmsweep."""
