"""The Pyro side: site and plate names (`sites`), routing priors (`priors`), the model
(`model`) and the amortised guide (`guide`), side by side."""
