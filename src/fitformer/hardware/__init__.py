"""Hardware: the device catalog and (to come) accelerator models, DSE and simulator."""
