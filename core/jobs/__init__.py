"""The job engine: dispatch to backends, run one job, reconcile after restarts, deliver."""
