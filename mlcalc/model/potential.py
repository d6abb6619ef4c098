"""NeuralNetworkPotential: input modules -> representation -> outputs -> postprocessors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from mlcalc import properties as P
from mlcalc.atomistic import Atomwise, Forces, PairVectors
from mlcalc.exceptions import MlcalcError, unknown_name
from mlcalc.model.base import AtomisticModel
from mlcalc.representation import Representation, get_representation
from mlcalc.transform.neighbors import NeighborListSettings
from mlcalc.transform.offsets import AddOffsets, Offsets

INPUT_MODULES = {"pair_vectors": PairVectors}
OUTPUT_MODULES = {"atomwise": Atomwise, "forces": Forces}
POSTPROCESSORS = {"add_offsets": AddOffsets}

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_name(dtype: torch.dtype | str) -> str:
    """``"float32"`` or ``"float64"`` for a torch dtype or its name.

    Raises:
        UnknownNameError: any other dtype (with a did-you-mean).
    """
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

    The model states what its inputs need — :attr:`cutoff`, the pair-list
    form (:attr:`pairs`), the neighbor-list backend per device
    (:attr:`neighbor_list`) and :attr:`dtype` — and
    :func:`mlcalc.model.atoms_to_batch` builds exactly that.

    Args:
        representation: the representation module.
        output_modules: output modules run in order.
        input_modules: defaults to ``[PairVectors()]``.
        postprocessors: applied in evaluation.
        elements: atomic numbers the model was trained on (None: any).
        neighbor_list: neighbor-list backends per device (default: matscipy
            on CPU, the torch cell list on GPUs).
    """

    def __init__(self, representation: Representation, output_modules: Sequence[nn.Module],
                 input_modules: Sequence[nn.Module] | None = None,
                 postprocessors: Sequence[nn.Module] | None = None,
                 elements: Iterable[int] | None = None,
                 neighbor_list: NeighborListSettings | None = None) -> None:
        super().__init__(postprocessors)
        self.input_modules = nn.ModuleList(input_modules or [PairVectors()])
        self.representation = representation
        self.output_modules = nn.ModuleList(output_modules)
        self.elements = sorted(int(z) for z in elements) if elements is not None else None
        self.neighbor_list = neighbor_list or NeighborListSettings()

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the representation in Å."""
        return self.representation.cutoff

    @property
    def pairs(self) -> str:
        """Pair-list form the model reads (``"half"`` or ``"full"``)."""
        return self.representation.pairs

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the network weights."""
        return self.representation.dtype

    @property
    def offsets(self) -> Offsets:
        """The energy offsets restored by the postprocessor (zero if none)."""
        for pp in self.postprocessors:
            if isinstance(pp, AddOffsets):
                return pp.offsets
        return Offsets()

    def set_offsets(self, offsets: Offsets) -> None:
        """Restore ``offsets`` on output (replaces an earlier :class:`AddOffsets`)."""
        kept = [pp for pp in self.postprocessors if not isinstance(pp, AddOffsets)]
        self.postprocessors = nn.ModuleList([AddOffsets(offsets), *kept])

    @property
    def implemented_properties(self) -> list[str]:
        """Properties this model can return."""
        return [key for m in self.output_modules for key in getattr(m, "output_keys", ())]

    @property
    def default_properties(self) -> tuple[str, ...]:
        """What a call without ``properties`` computes: energy, and forces if possible."""
        return tuple(p for p in (P.energy, P.forces) if p in self.implemented_properties)

    def check_properties(self, properties: Iterable[str]) -> frozenset[str]:
        """The requested names as a set.

        Raises:
            MlcalcError: a property the model cannot compute.
        """
        props = frozenset(properties)
        missing = props - set(self.implemented_properties) - {P.free_energy}
        if missing:
            raise MlcalcError(f"this model cannot compute {', '.join(sorted(missing))}; "
                              f"it implements {', '.join(self.implemented_properties)}")
        return props

    def required_derivatives(self, properties: Iterable[str]) -> list[str]:
        """Input keys the outputs are differentiated by for ``properties`` (ordered)."""
        props = frozenset(properties)
        keys: list[str] = []
        for m in self.output_modules:
            if isinstance(m, Forces):
                keys += [k for k in m.required_derivatives(props) if k not in keys]
        return keys

    def forward(self, inputs: dict[str, torch.Tensor], properties: Iterable[str] | None = None,
                postprocess: bool | None = None) -> dict[str, torch.Tensor]:
        """Outputs for a batch built by :func:`mlcalc.model.atoms_to_batch`.

        Args:
            inputs: the batch (its dict is extended in place and returned).
            properties: what to compute (default :attr:`default_properties`);
                the derivatives not named are not computed.
            postprocess: restore the offsets; None: unless training.
        """
        props = self.check_properties(self.default_properties if properties is None
                                      else properties)
        inputs = self.initialize_derivatives(inputs, self.required_derivatives(props))
        for m in self.input_modules:
            inputs = m(inputs)
        inputs = self.representation(inputs)
        for m in self.output_modules:
            inputs = m(inputs, props)
        return self.postprocess(inputs, postprocess)

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
            "dtype": dtype_name(self.dtype),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any],
                    neighbor_list: NeighborListSettings | None = None) -> NeuralNetworkPotential:
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
            neighbor_list=neighbor_list,
        )
        return model.to(DTYPES[dtype_name(config.get("dtype", "float32"))])


def build_potential(representation: str | dict[str, Any] | Representation = "painn", *,
                    atomwise: dict[str, Any] | None = None, forces: bool = True,
                    offsets: Offsets | dict | None = None,
                    elements: Iterable[int] | None = None,
                    dtype: torch.dtype | str = torch.float32,
                    neighbor_list: NeighborListSettings | None = None,
                    **hyperparameters: Any) -> NeuralNetworkPotential:
    """Build an energy (+ forces/stress) potential by names.

    Args:
        representation: ``"schnet"`` / ``"painn"``, a dict with ``name`` and
            hyperparameters, or a built representation.
        atomwise: extra arguments of the :class:`Atomwise` head.
        forces: add the :class:`Forces` module (forces, stress, Hessian).
        offsets: energy offsets restored in float64 by :class:`AddOffsets`.
        elements: atomic numbers the model supports.
        dtype: network precision (float32 or float64).
        neighbor_list: neighbor-list backends per device.
        **hyperparameters: representation hyperparameters (``n_atom_basis``,
            ``n_interactions``, ``cutoff``, ``n_rbf``, ...).

    Example:
        >>> model = build_potential("painn", n_atom_basis=32, cutoff=4.0)
    """
    if isinstance(representation, Representation):
        if hyperparameters:
            raise TypeError("hyperparameters go to the representation, which is already built")
        rep = representation
    else:
        spec = ({**representation, **hyperparameters} if isinstance(representation, dict)
                else {"name": representation, **hyperparameters})
        rep = get_representation(spec.pop("name"), **spec)
    n_in = rep.hyperparameters["n_atom_basis"]
    outputs: list[nn.Module] = [Atomwise(n_in, **(atomwise or {}))]
    if forces:
        outputs.append(Forces())
    post = [AddOffsets(offsets)] if offsets is not None else []
    model = NeuralNetworkPotential(rep, outputs, postprocessors=post, elements=elements,
                                   neighbor_list=neighbor_list)
    return model.to(DTYPES[dtype_name(dtype)])
