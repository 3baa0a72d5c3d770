"""sweep layer of vlmsweep."""
