"""report layer of vlmsweep."""
