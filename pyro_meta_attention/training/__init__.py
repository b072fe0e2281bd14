"""Training: building model and guide from a config (`build`), the SVI loop (`svi`), its
schedules (`schedules`) and divergence check (`divergence`), and the run folder (`run_dir`) with
its checkpoint (`checkpoint`: weights, optimiser, random states from `rng`, the data identity
from `data_identity`), saved on a signal (`signals`); several processes under torch DDP
(`distributed`)."""
