"""config layer of vlmsweep."""
