"""Simulations driven by ASE and phonopy: thin, tested wrappers (md, relax, phonons)."""
