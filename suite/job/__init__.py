"""One job: a run's config resolved and checked, trained with selection, tested once, logged to
MLflow, checkpointed and resumable; also its ownership record and merge maps."""
