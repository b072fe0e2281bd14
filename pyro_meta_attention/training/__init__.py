"""Training: building model and guide from a config (`build`), the SVI loop (`svi`), its
schedules (`schedules`), and the run folder with its checkpoint (`run_dir`, `checkpoint`)."""
