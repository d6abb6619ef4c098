"""Reference data made offline with ASE's own calculators, reproducible by seed.

:func:`generate_emt` labels fcc metals and their random alloys with ASE's
effective-medium theory: strained and rattled bulk, homogeneous strains for
elastic constants, MD snapshots, vacancies and vacancy hops, surface slabs and
small clusters. :func:`generate_lj` labels compact Lennard-Jones clusters.
"""

from mlcalc.data.generate.common import Progress
from mlcalc.data.generate.emt import EMT_ELEMENTS, EMT_KINDS, emt_lattice_constant, generate_emt
from mlcalc.data.generate.lj import generate_lj

__all__ = ["EMT_ELEMENTS", "EMT_KINDS", "Progress", "emt_lattice_constant", "generate_emt",
           "generate_lj"]
