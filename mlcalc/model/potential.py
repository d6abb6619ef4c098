"""NeuralNetworkPotential: input modules -> representation -> outputs -> postprocessors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from mlcalc import kernels
from mlcalc import properties as P
from mlcalc.atomistic import Atomwise, Forces, PairVectors
from mlcalc.exceptions import MlcalcError, unknown_name
from mlcalc.model.base import AtomisticModel
from mlcalc.representation import Representation, get_representation
from mlcalc.transform.neighbors import full_pairs
from mlcalc.transform.offsets import AddOffsets, Offsets

INPUT_MODULES = {"pair_vectors": PairVectors}
OUTPUT_MODULES = {"atomwise": Atomwise, "forces": Forces}
POSTPROCESSORS = {"add_offsets": AddOffsets}

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype_name(dtype: torch.dtype | str) -> str:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise unknown_name("dtype", name, DTYPES)
    return name


class NeuralNetworkPotential(AtomisticModel):
    """A machine-learned potential in SchNetPack's four stages.

    1. input modules (pair vectors from positions, cell and shifts; strain),
    2. a representation (SchNet or PaiNN) giving per-atom features,
    3. output modules (Atomwise energy, Forces derivatives),
    4. postprocessors (AddOffsets in float64), skipped while training.

    Args:
        representation: the representation module.
        output_modules: output modules run in order.
        input_modules: defaults to ``[PairVectors()]``.
        postprocessors: applied in evaluation.
        elements: atomic numbers the model was trained on (None: any).
    """

    def __init__(self, representation: Representation, output_modules: Sequence[nn.Module],
                 input_modules: Sequence[nn.Module] | None = None,
                 postprocessors: Sequence[nn.Module] | None = None,
                 elements: Iterable[int] | None = None,
                 do_postprocessing: bool = True) -> None:
        super().__init__(postprocessors, do_postprocessing)
        self.input_modules = nn.ModuleList(input_modules or [PairVectors()])
        self.representation = representation
        self.output_modules = nn.ModuleList(output_modules)
        self.elements = sorted(int(z) for z in elements) if elements is not None else None
        self._requested: frozenset[str] | None = None  # last request(); switch flags there
        #: Use the fused kernels (:mod:`mlcalc.kernels`) where they apply; False: always eager.
        self.fused = True
        self.collect_derivatives()

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the representation in Å."""
        return self.representation.cutoff

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the network weights."""
        return self.representation.dtype

    @property
    def offsets(self) -> Offsets:
        for pp in self.postprocessors:
            if isinstance(pp, AddOffsets):
                return pp.offsets
        return Offsets()

    def _derivative_modules(self) -> list[Forces]:
        return [m for m in self.output_modules if isinstance(m, Forces)]

    @property
    def implemented_properties(self) -> list[str]:
        """Properties this model can return."""
        props = [getattr(m, "output_key", None) for m in self.output_modules]
        props += [getattr(m, "per_atom_output_key", None) for m in self.output_modules]
        if self._derivative_modules():
            props += [P.forces, P.stress, P.hessian]
        return [p for p in props if p is not None]

    def request(self, properties: Iterable[str]) -> None:
        """Switch the derivatives on or off for the next calls.

        The switches are remembered: repeating the previous request costs
        nothing, so set them through this method, not on the modules.

        Args:
            properties: names such as ``energy``, ``forces``, ``stress``,
                ``hessian``; derivatives not named are not computed.

        Raises:
            MlcalcError: a property the model cannot compute.
        """
        props = frozenset(properties)
        if props == self._requested:
            return  # called at every MD step with the same properties: nothing to redo
        missing = props - set(self.implemented_properties) - {P.free_energy}
        if missing:
            raise MlcalcError(f"this model cannot compute {', '.join(sorted(missing))}; "
                              f"it implements {', '.join(self.implemented_properties)}")
        for m in self._derivative_modules():
            m.calc_forces = P.forces in props
            m.calc_stress = P.stress in props
            m.calc_hessian = P.hessian in props
        self.collect_derivatives()
        self._requested = props

    def accepts_half_list(self) -> bool:
        """Whether half lists (``properties.half_list``) reach the fused kernels.

        True for a representation with a fused path, on CPU, with the kernels
        built and :attr:`fused` set. Any model takes half lists (they are
        expanded to full ones where the fused path does not apply); this says
        whether they make it faster.
        """
        return (self.fused and self.representation.supports_fused
                and next(self.parameters()).device.type == "cpu" and kernels.available())

    def _fused_now(self) -> bool:
        # The kernels' backward is not differentiable again: training (a loss on
        # the forces) and the Hessian take the eager path.
        hessian = any(m.calc_hessian for m in self._derivative_modules())
        return not self.training and not hessian and self.accepts_half_list()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = self.initialize_derivatives(inputs)
        for m in self.input_modules:
            inputs = m(inputs)
        if P.half_list in inputs and not self._fused_now():
            expand_half_list(inputs)
        inputs = self.representation(inputs)
        for m in self.output_modules:
            inputs = m(inputs)
        return self.postprocess(inputs)

    # ---- configuration (what the model file stores) ---------------------
    def get_config(self) -> dict[str, Any]:
        """Plain-data description from which :meth:`from_config` rebuilds the model."""
        return {
            "input_modules": [m.get_config() for m in self.input_modules],
            "representation": {"name": self.representation.name,
                               **self.representation.hyperparameters},
            "output_modules": [m.get_config() for m in self.output_modules],
            "postprocessors": [m.get_config() for m in self.postprocessors],
            "elements": self.elements,
            "dtype": _dtype_name(self.dtype),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NeuralNetworkPotential:
        """Build an (untrained) model from :meth:`get_config`'s output."""

        def build(registry: dict, kind: str, spec: dict) -> nn.Module:
            spec = dict(spec)
            name = spec.pop("name")
            if name not in registry:
                raise unknown_name(kind, name, registry)
            return registry[name](**spec)

        rep_spec = dict(config["representation"])
        model = cls(
            representation=get_representation(rep_spec.pop("name"), **rep_spec),
            output_modules=[build(OUTPUT_MODULES, "output module", s)
                            for s in config["output_modules"]],
            input_modules=[build(INPUT_MODULES, "input module", s)
                           for s in config.get("input_modules", [{"name": "pair_vectors"}])],
            postprocessors=[build(POSTPROCESSORS, "postprocessor", s)
                            for s in config.get("postprocessors", [])],
            elements=config.get("elements"),
        )
        return model.to(DTYPES[_dtype_name(config.get("dtype", "float32"))])


def expand_half_list(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn a half list (and its pair vectors, if formed) into the full list, in place."""
    del inputs[P.half_list]
    inputs[P.idx_i], inputs[P.idx_j], inputs[P.cell_shifts] = full_pairs(
        inputs[P.idx_i], inputs[P.idx_j], inputs[P.cell_shifts])
    if P.Rij in inputs:
        inputs[P.Rij] = torch.cat([inputs[P.Rij], -inputs[P.Rij]])
    return inputs


def build_potential(representation: str | dict[str, Any] = "painn", *,
                    atomwise: dict[str, Any] | None = None, forces: bool = True,
                    offsets: Offsets | dict | None = None,
                    elements: Iterable[int] | None = None,
                    dtype: torch.dtype | str = torch.float32,
                    **hyperparameters: Any) -> NeuralNetworkPotential:
    """Build an energy (+ forces/stress) potential by names.

    Args:
        representation: ``"schnet"`` / ``"painn"``, or a dict with ``name``
            and hyperparameters.
        atomwise: extra arguments of the :class:`Atomwise` head.
        forces: add the :class:`Forces` module (forces, stress, Hessian).
        offsets: energy offsets restored in float64 by :class:`AddOffsets`.
        elements: atomic numbers the model supports.
        dtype: network precision (float32 or float64).
        **hyperparameters: representation hyperparameters (``n_atom_basis``,
            ``n_interactions``, ``cutoff``, ``n_rbf``, ...).

    Example:
        >>> model = build_potential("painn", n_atom_basis=32, cutoff=4.0)
    """
    if isinstance(representation, dict):
        spec = {**representation, **hyperparameters}
    else:
        spec = {"name": representation, **hyperparameters}
    rep_name = spec.pop("name")
    rep = get_representation(rep_name, **spec)
    n_in = rep.hyperparameters["n_atom_basis"]
    outputs: list[nn.Module] = [Atomwise(n_in, **(atomwise or {}))]
    if forces:
        outputs.append(Forces())
    post = [AddOffsets(offsets)] if offsets is not None else []
    model = NeuralNetworkPotential(rep, outputs, postprocessors=post, elements=elements)
    return model.to(DTYPES[_dtype_name(dtype)])
