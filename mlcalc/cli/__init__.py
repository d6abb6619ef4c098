"""The ``mlcalc`` command line (click). Subcommands are imported lazily."""
