"""What an MD run does: :class:`MDSettings`, checked when made, and the ASE integrator.

The settings are one dataclass shared by :func:`mlcalc.simulate.md.run_md`
and ``mlcalc md``: the command line builds them first, so a bad option fails
in milliseconds, before a structure is read or a model is loaded. Importing
this module imports neither torch nor ASE's dynamics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlcalc.exceptions import InvalidStructureError, MlcalcError, unknown_name

ENSEMBLES = ("nve", "nvt-langevin", "nvt-bussi", "nvt-nose-hoover", "npt")
BAROSTATS = ("mtk", "berendsen")
UNCERTAINTY_ACTIONS = ("stop", "record")

#: Berendsen NPT needs a compressibility; 1/(100 GPa) is the order of metals
#: and oxides (Cu: 1/140 GPa). It sets only how fast the volume relaxes.
DEFAULT_BULK_MODULUS_GPA = 100.0


class MDError(MlcalcError, ValueError):
    """Options that cannot make a molecular-dynamics run."""


@dataclass(frozen=True)
class MDSettings:
    """Options of a molecular-dynamics run (units in the names; ASE's otherwise).

    Attributes:
        ensemble: ``nve``, ``nvt-langevin``, ``nvt-bussi``, ``nvt-nose-hoover``, ``npt``.
        steps: steps to integrate.
        timestep_fs: time step, fs.
        temperature_K: target temperature (and of the initial velocities), K.
        pressure_GPa: NPT target pressure, GPa.
        friction_per_fs: Langevin friction, 1/fs.
        tdamp_fs: thermostat time constant (Bussi, Nosé–Hoover, NPT), fs.
        pdamp_fs: barostat time constant (NPT), fs.
        barostat: NPT barostat, ``mtk`` (isotropic MTK) or ``berendsen``.
        seed: seed of the initial velocities and of the thermostat noise.
        interval: steps between frames, log lines and progress reports.
        uncertainty_threshold: ensembles of models only: the largest per-atom
            ``forces_std`` (eV/Å) that stops the run or is recorded.
        on_uncertainty: ``stop`` or ``record`` when the threshold is exceeded.

    Raises:
        UnknownNameError: unknown ensemble, barostat or action (did-you-mean).
        MDError: a value out of range.
    """

    ensemble: str = "nvt-langevin"
    steps: int = 1000
    timestep_fs: float = 1.0
    temperature_K: float = 300.0
    pressure_GPa: float = 0.0
    friction_per_fs: float = 0.01
    tdamp_fs: float = 100.0
    pdamp_fs: float = 1000.0
    barostat: str = "mtk"
    seed: int = 0
    interval: int = 10
    uncertainty_threshold: float | None = None
    on_uncertainty: str = "stop"

    def __post_init__(self) -> None:
        for kind, value, choices in (("ensemble", self.ensemble, ENSEMBLES),
                                     ("barostat", self.barostat, BAROSTATS),
                                     ("on_uncertainty action", self.on_uncertainty,
                                      UNCERTAINTY_ACTIONS)):
            if value not in choices:
                raise unknown_name(kind, value, choices)
        if self.steps < 0 or self.interval < 1:
            raise MDError(f"need steps >= 0 and interval >= 1 (got {self.steps}, "
                          f"{self.interval})")
        for name in ("timestep_fs", "friction_per_fs", "tdamp_fs", "pdamp_fs"):
            value = getattr(self, name)
            if not value > 0:  # also refuses NaN
                raise MDError(f"{name} must be > 0, got {value}")
        if self.ensemble != "nve" and not self.temperature_K > 0:
            raise MDError(f"ensemble '{self.ensemble}' needs temperature_K > 0, got "
                          f"{self.temperature_K}")
        if self.temperature_K < 0 or not np.isfinite(self.pressure_GPa):
            raise MDError("temperature_K must be >= 0 and pressure_GPa finite")
        if self.uncertainty_threshold is not None and not self.uncertainty_threshold > 0:
            raise MDError(f"uncertainty_threshold must be > 0 eV/Å, got "
                          f"{self.uncertainty_threshold}")

    def check_structure(self, atoms) -> None:
        """Refuse a structure these settings cannot run (NPT without a periodic cell).

        Raises:
            InvalidStructureError: NPT on a structure not periodic in all directions.
        """
        if self.ensemble == "npt" and (not atoms.pbc.all() or atoms.cell.rank < 3):
            raise InvalidStructureError("npt needs a structure periodic in all three "
                                        f"directions with a full cell (pbc={atoms.pbc.tolist()})")

    def make_dynamics(self, atoms, rng: np.random.Generator):
        """ASE's integrator for these settings on ``atoms``, units converted to ASE's."""
        from ase import units

        self.check_structure(atoms)
        dt = self.timestep_fs * units.fs
        tdamp, pdamp, t_K = self.tdamp_fs * units.fs, self.pdamp_fs * units.fs, self.temperature_K
        if self.ensemble == "nve":
            from ase.md.verlet import VelocityVerlet

            return VelocityVerlet(atoms, dt)
        if self.ensemble == "nvt-langevin":
            from ase.md.langevin import Langevin

            # fixcm=False: ASE's fixcm=True does not sample the canonical ensemble
            return Langevin(atoms, dt, temperature_K=t_K,
                            friction=self.friction_per_fs / units.fs, fixcm=False, rng=rng)
        if self.ensemble == "nvt-bussi":
            from ase.md.bussi import Bussi

            return Bussi(atoms, dt, temperature_K=t_K, taut=tdamp, rng=rng)
        if self.ensemble == "nvt-nose-hoover":
            from ase.md.nose_hoover_chain import NoseHooverChainNVT

            return NoseHooverChainNVT(atoms, dt, temperature_K=t_K, tdamp=tdamp)
        pressure = self.pressure_GPa * units.GPa
        if self.barostat == "berendsen":
            from ase.md.nptberendsen import NPTBerendsen

            return NPTBerendsen(atoms, dt, temperature_K=t_K, pressure_au=pressure, taut=tdamp,
                                taup=pdamp,
                                compressibility_au=1.0 / (DEFAULT_BULK_MODULUS_GPA * units.GPa))
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(atoms, dt, temperature_K=t_K, pressure_au=pressure, tdamp=tdamp,
                               pdamp=pdamp)


__all__ = ["BAROSTATS", "DEFAULT_BULK_MODULUS_GPA", "ENSEMBLES", "MDError", "MDSettings",
           "UNCERTAINTY_ACTIONS"]
