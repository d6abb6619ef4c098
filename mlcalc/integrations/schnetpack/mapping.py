"""Map a read SchNetPack 2 model onto mlcalc's NeuralNetworkPotential.

What maps to what (SchNetPack → mlcalc):

* ``representation.SchNet`` → :class:`~mlcalc.representation.SchNet`
  (``interactions.k.filter_network`` → ``interactions.k.filter_net``);
* ``representation.PaiNN`` → :class:`~mlcalc.representation.PaiNN`
  (``interactions.k.interatomic_context_net`` → ``messages.k.context_net``,
  ``mixing.k.intraatomic_context_net`` → ``updates.k.context_net`` with its
  output blocks reordered, ``mixing.k.mu_channel_mix`` →
  ``updates.k.channel_mix``; SchNetPack's ``epsilon`` is kept);
* ``nn.GaussianRBF`` / ``nn.BesselRBF`` → ``gaussian`` / ``bessel`` (centres,
  width and frequencies copied); ``nn.CosineCutoff`` / ``MollifierCutoff`` →
  ``cosine`` / ``mollifier``;
* ``atomistic.Atomwise`` ``outnet`` → :class:`~mlcalc.atomistic.Atomwise` ``net``;
  ``atomistic.Forces`` (and ``Strain``) → :class:`~mlcalc.atomistic.Forces`
  (stress always available);
* ``transform.AddOffsets`` mean and atomrefs →
  :class:`~mlcalc.transform.offsets.Offsets`; ``CastTo64`` / ``CastTo32`` →
  nothing (mlcalc's outputs are float64).

PaiNN's mixing network outputs three blocks. SchNetPack orders them
(Δq, Δμ, Δqμ); mlcalc's update orders the same three (a_vv = Δμ, a_sv = Δqμ,
a_ss = Δq), so the rows of the last layer are permuted on import.

Units: SchNetPack models carry none. Energies in ``energy_unit`` are scaled to
eV in the last layer of the head and in the offsets; lengths in
``length_unit`` to Å in the cutoff, the Gaussian centres and widths, and
(Bessel basis, which is 1/d-weighted) the frequencies and the first filter
layer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from mlcalc.atomistic import Atomwise, Forces
from mlcalc.exceptions import MlcalcWarning, SchNetPackImportError
from mlcalc.integrations.schnetpack.reader import SUPPORTED, FunctionRef, Record
from mlcalc.model.potential import NeuralNetworkPotential
from mlcalc.representation import get_representation
from mlcalc.transform.offsets import AddOffsets, Offsets

_ACTIVATIONS = {"silu": "silu", "SiLU": "silu", "shifted_softplus": "ssp",
                "ShiftedSoftplus": "ssp", "tanh": "tanh", "Tanh": "tanh"}
_IGNORED_INPUTS = ("PairwiseDistances", "Strain")
_IGNORED_POST = ("CastTo64", "CastTo32")


class ElementsGuessedWarning(MlcalcWarning):
    """The elements of an imported model were not given and had to be guessed."""


def _unsupported(rec: Any, role: str) -> SchNetPackImportError:
    what = rec.class_name if isinstance(rec, Record) else type(rec).__name__
    return SchNetPackImportError(f"{role} {what} is not supported; mlcalc imports {SUPPORTED}")


def _tensor(rec: Record, key: str) -> torch.Tensor:
    value = rec.get(key)
    if not isinstance(value, torch.Tensor):
        raise SchNetPackImportError(f"{rec.class_name}.{key} is not a tensor in the model file")
    return value.detach().to(torch.float64)


def _activation(fn: Any) -> str:
    """mlcalc's name of a pickled activation (function or module)."""
    name = fn.name if isinstance(fn, FunctionRef | Record) else type(fn).__name__
    if name not in _ACTIVATIONS:
        raise SchNetPackImportError(f"activation {name} is not supported; mlcalc imports silu, "
                                    "shifted_softplus and tanh")
    return _ACTIVATIONS[name]


def _dense(rec: Record, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Copy a Dense/Linear layer's weight (and bias) under ``prefix``."""
    if rec.name not in ("Dense",):
        raise _unsupported(rec, "layer")
    out[f"{prefix}.weight"] = _tensor(rec, "weight")
    if rec.get("bias", None) is not None:
        out[f"{prefix}.bias"] = _tensor(rec, "bias")


def _sequential(rec: Record, prefix: str, out: dict[str, torch.Tensor]) -> list[Record]:
    layers = rec.children()
    for k, layer in enumerate(layers):
        _dense(layer, f"{prefix}.{k}", out)
    return layers


def _blocks(rec: Record, key: str) -> tuple[list[Record], bool]:
    """Distinct blocks of a ModuleList and whether one block is shared by all."""
    items = rec.get(key).children()
    distinct = list({id(b): b for b in items}.values())
    if len(items) > 1 and len(distinct) == 1:
        return distinct, True
    if len(distinct) != len(items):
        raise SchNetPackImportError(f"{rec.class_name}.{key}: partly shared blocks are not "
                                    "supported")
    return distinct, False


def _radial(rep: Record, length: float) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Hyperparameters and buffers of the radial basis and the cutoff, lengths in Å."""
    basis, cutoff_fn = rep.get("radial_basis"), rep.get("cutoff_fn")
    if not isinstance(cutoff_fn, Record) or cutoff_fn.name not in ("CosineCutoff",
                                                                    "MollifierCutoff"):
        raise _unsupported(cutoff_fn, "cutoff function")
    cutoff = float(_tensor(cutoff_fn, "cutoff").reshape(-1)[0]) * length
    hp = {"cutoff": cutoff, "n_rbf": int(basis.get("n_rbf")),
          "cutoff_fn": "cosine" if cutoff_fn.name == "CosineCutoff" else "mollifier"}
    if cutoff_fn.name == "MollifierCutoff":
        eps = float(_tensor(cutoff_fn, "eps").reshape(-1)[0])
        if not math.isclose(eps, 1e-7, rel_tol=1e-6):
            raise SchNetPackImportError(f"MollifierCutoff with eps={eps:g} is not supported "
                                        "(only the default 1e-7)")
    buffers: dict[str, torch.Tensor] = {}
    if basis.name == "GaussianRBF":
        widths = _tensor(basis, "widths")
        if not torch.all(widths == widths[0]):
            raise SchNetPackImportError("GaussianRBF with trained, unequal widths is not "
                                        "supported (mlcalc's Gaussians share one width)")
        hp["radial_basis"] = "gaussian"
        buffers["radial_basis.centers"] = _tensor(basis, "offsets") * length
        buffers["radial_basis.coeff"] = -0.5 / (widths[0] * length) ** 2
    elif basis.name == "BesselRBF":
        hp["radial_basis"] = "bessel"
        buffers["radial_basis.freqs"] = _tensor(basis, "freqs") / length
    else:
        raise _unsupported(basis, "radial basis")
    return hp, buffers


def _embedding(rep: Record) -> torch.Tensor:
    emb = rep.get("embedding")
    if not isinstance(emb, Record) or emb.name != "Embedding":
        raise _unsupported(emb, "nuclear embedding")
    if (rep.get("electronic_embeddings", None) is not None
            and rep.get("electronic_embeddings").children()):
        raise SchNetPackImportError("electronic (charge/spin) embeddings are not supported")
    return _tensor(emb, "weight")


def _painn(rep: Record, length: float, bessel: bool) -> tuple[dict, dict]:
    messages, shared = _blocks(rep, "interactions")
    updates, _ = _blocks(rep, "mixing")
    sd: dict[str, torch.Tensor] = {}
    _dense(rep.get("filter_net"), "filter_net", sd)
    if bessel:  # the basis carries 1/d: d in model units = d_Å / length
        sd["filter_net.weight"] = sd["filter_net.weight"] * length
    for k, (msg, upd) in enumerate(zip(messages, updates, strict=True)):
        layers = _sequential(msg.get("interatomic_context_net"), f"messages.{k}.context_net", sd)
        _sequential(upd.get("intraatomic_context_net"), f"updates.{k}.context_net", sd)
        _dense(upd.get("mu_channel_mix"), f"updates.{k}.channel_mix", sd)
        n = int(rep.get("n_atom_basis"))
        for key in (f"updates.{k}.context_net.1.weight", f"updates.{k}.context_net.1.bias"):
            dq, dmu, dqmu = torch.split(sd[key], n, dim=0)  # SchNetPack's order
            sd[key] = torch.cat([dmu, dqmu, dq], dim=0)  # mlcalc's a_vv, a_sv, a_ss
    eps = {float(u.get("epsilon")) for u in updates}
    if len(eps) != 1:
        raise SchNetPackImportError("PaiNN blocks with different epsilon are not supported")
    hp = {"n_atom_basis": int(rep.get("n_atom_basis")),
          "n_interactions": int(rep.get("n_interactions")), "shared_interactions": shared,
          "shared_filters": bool(rep.get("share_filters")),
          "activation": _activation(layers[0].get("activation")), "epsilon": eps.pop()}
    return hp, sd


def _schnet(rep: Record, length: float, bessel: bool) -> tuple[dict, dict]:
    blocks, shared = _blocks(rep, "interactions")
    sd: dict[str, torch.Tensor] = {}
    for k, block in enumerate(blocks):
        _dense(block.get("in2f"), f"interactions.{k}.in2f", sd)
        filters = _sequential(block.get("filter_network"), f"interactions.{k}.filter_net", sd)
        _sequential(block.get("f2out"), f"interactions.{k}.f2out", sd)
        if bessel:
            key = f"interactions.{k}.filter_net.0.weight"
            sd[key] = sd[key] * length
    hp = {"n_atom_basis": int(rep.get("n_atom_basis")),
          "n_interactions": len(rep.get("interactions").children()),
          "n_filters": int(rep.get("n_filters")), "shared_interactions": shared,
          "activation": _activation(filters[0].get("activation"))}
    return hp, sd


def _representation(rep: Record, length: float) -> tuple[dict[str, Any], dict]:
    """mlcalc representation spec (with ``name``) and its state dict."""
    if not isinstance(rep, Record) or rep.name not in ("SchNet", "PaiNN"):
        raise _unsupported(rep, "representation")
    radial_hp, buffers = _radial(rep, length)
    bessel = radial_hp["radial_basis"] == "bessel"
    build = _painn if rep.name == "PaiNN" else _schnet
    hp, sd = build(rep, length, bessel)
    weight = _embedding(rep)
    sd = {"embedding.weight": weight, **buffers, **sd}
    spec = {"name": rep.name.lower(), **hp, **radial_hp, "max_z": weight.shape[0] - 1}
    return spec, sd


def _head(outputs: list[Any], energy_key: str, energy: float) -> tuple[dict, dict]:
    """Atomwise spec and state dict of the energy head, scaled to eV."""
    heads = [m for m in outputs if isinstance(m, Record) and m.name == "Atomwise"]
    energy_heads = [h for h in heads if h.get("output_key") == energy_key]
    if len(energy_heads) != 1:
        raise SchNetPackImportError(f"the model has no Atomwise head for '{energy_key}'; "
                                    "mlcalc imports energy models")
    head = energy_heads[0]
    for m in outputs:
        if m is head or (isinstance(m, Record) and m.name == "Forces"):
            continue
        raise _unsupported(m, "output module")
    if int(head.get("n_out")) != 1:
        raise SchNetPackImportError("an Atomwise energy head with n_out != 1 is not supported")
    sd: dict[str, torch.Tensor] = {}
    layers = _sequential(head.get("outnet"), "net", sd)
    last = len(layers) - 1
    sd[f"net.{last}.weight"] = sd[f"net.{last}.weight"] * energy
    sd[f"net.{last}.bias"] = sd[f"net.{last}.bias"] * energy
    widths = [int(sd[f"net.{k}.weight"].shape[0]) for k in range(last)]
    aggregation = head.get("aggregation_mode")
    if aggregation not in ("sum", "avg"):
        raise SchNetPackImportError(f"Atomwise aggregation {aggregation!r} is not supported "
                                    "(sum or avg)")
    spec = {"n_in": int(sd["net.0.weight"].shape[1]), "n_hidden": widths,
            "n_layers": len(layers), "aggregation_mode": aggregation,
            "activation": _activation(layers[0].get("activation")) if last else "silu"}
    return spec, sd


def _offsets(postprocessors: list[Any], energy_key: str, energy: float) -> Offsets | None:
    """The energy offsets of the AddOffsets postprocessor in eV (None if there is none)."""
    offsets = None
    for pp in postprocessors:
        if isinstance(pp, Record) and pp.name in _IGNORED_POST:
            continue
        if not (isinstance(pp, Record) and pp.name == "AddOffsets"):
            raise _unsupported(pp, "postprocessor")
        if pp.get("_property") != energy_key:
            raise SchNetPackImportError(f"AddOffsets on '{pp.get('_property')}' is not "
                                        f"supported (only on the energy '{energy_key}')")
        add_mean, add_refs = bool(pp.get("add_mean")), bool(pp.get("add_atomrefs"))
        if (add_mean or add_refs) and not pp.get("is_extensive", True):
            raise SchNetPackImportError("AddOffsets with is_extensive=False is not supported "
                                        "(an energy offset is per atom)")
        mean = float(_tensor(pp, "mean").reshape(-1)[0]) * energy if add_mean else 0.0
        refs = {}
        if add_refs:
            table = _tensor(pp, "atomref").reshape(-1) * energy
            refs = {z: float(v) for z, v in enumerate(table.tolist()) if v != 0.0}
        previous = offsets or Offsets()
        merged = dict(previous.atomrefs)
        for z, v in refs.items():
            merged[z] = merged.get(z, 0.0) + v
        offsets = Offsets(previous.mean_per_atom + mean, merged)
    return offsets


def _elements(given: Iterable[int] | None, max_z: int, offsets: Offsets | None,
              source: str) -> list[int]:
    if given is not None:
        elements = sorted({int(z) for z in given})
        outside = [z for z in elements if not 1 <= z <= max_z]
        if outside:
            raise SchNetPackImportError(f"elements {outside} are outside the model's embedding "
                                        f"(atomic numbers 1-{max_z})")
        return elements
    if offsets is not None and offsets.atomrefs:
        elements = sorted(z for z in offsets.atomrefs if 1 <= z <= max_z)
        how = "the elements with an atom reference energy"
    else:
        elements = list(range(1, max_z + 1))
        how = f"every atomic number the embedding holds (1-{max_z})"
    warnings.warn(f"{source}: the model's elements were not given; guessed {how}: pass "
                  "--elements (elements=) with those it was trained on", ElementsGuessedWarning,
                  stacklevel=3)
    return elements


def convert(root: Any, energy_unit_eV: float = 1.0, length_unit_A: float = 1.0,
            elements: Iterable[int] | None = None, source: str = "model",
            dtype: torch.dtype | None = None) -> NeuralNetworkPotential:
    """Build an mlcalc potential from a read SchNetPack model.

    Args:
        root: :func:`~mlcalc.integrations.schnetpack.reader.read_pickled_model`'s result.
        energy_unit_eV: the model's energy unit in eV.
        length_unit_A: the model's length unit in Å.
        elements: atomic numbers the model was trained on (None: guessed, with
            an :class:`ElementsGuessedWarning`).
        source: name of the file, for messages.
        dtype: precision of the potential; None keeps the file's. Weights are
            copied exactly either way; ``torch.float64`` also keeps the
            constants derived from them (the Gaussian coefficient
            -1/2σ², unit factors) in float64, so an imported float32 model
            then reproduces SchNetPack's float64 numbers to round-off
            (~1e-15 eV) instead of ~1e-8 eV.

    Raises:
        SchNetPackImportError: a class or setting mlcalc does not support.
    """
    if not isinstance(root, Record) or root.name != "NeuralNetworkPotential":
        raise _unsupported(root, "model")
    for m in root.get("input_modules").children():
        if not (isinstance(m, Record) and m.name in _IGNORED_INPUTS):
            raise _unsupported(m, "input module")
    outputs = root.get("output_modules").children()
    forces = [m for m in outputs if isinstance(m, Record) and m.name == "Forces"]
    energy_key = forces[0].get("energy_key") if forces else "energy"
    rep_spec, rep_sd = _representation(root.get("representation"), length_unit_A)
    head_spec, head_sd = _head(outputs, energy_key, energy_unit_eV)
    offsets = _offsets(root.get("postprocessors").children(), energy_key, energy_unit_eV)
    if dtype is None:
        dtype = root.get("representation").get("embedding").get("weight").dtype
    model = NeuralNetworkPotential(
        get_representation(**rep_spec), [Atomwise(**head_spec), Forces()],
        postprocessors=[AddOffsets(offsets)] if offsets is not None else [],
        elements=_elements(elements, rep_spec["max_z"], offsets, source))
    state = {**{f"representation.{k}": v for k, v in rep_sd.items()},
             **{f"output_modules.0.{k}": v for k, v in head_sd.items()}}
    model = model.to(torch.float64)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that do not fit the hyperparameters read
        raise SchNetPackImportError(f"{source}: the weights do not fit mlcalc's "
                                    f"{rep_spec['name']}: {str(err).splitlines()[-1].strip()}"
                                    ) from None
    missing = [k for k in missing if not k.startswith("postprocessors.")]
    if missing or unexpected:
        raise SchNetPackImportError(f"{source}: the model does not map onto mlcalc's "
                                    f"{rep_spec['name']}: missing {missing[:3]}, "
                                    f"unexpected {unexpected[:3]}")
    return model.to(dtype).eval()
