"""train layer of vlmsweep."""
