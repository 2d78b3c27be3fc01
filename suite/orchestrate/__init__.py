"""Many jobs: benchmark plans, their bench (here, in a local pool or on SLURM), and sweeps."""
