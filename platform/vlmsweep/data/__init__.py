"""data layer of vlmsweep."""
