"""Fine-tuning: a recipe that starts from a trained model (``model.init_from``).

The model file's architecture and weights are the start. A recipe may leave
``representation`` and the hyperparameters out; any it gives must equal the
file's (else one line names the key and both values). The network's dtype and
the training neighbor-list backend are the recipe's.

Energy offsets: kept by default (``init_offsets: keep``): the network was
trained to predict energies relative to the file's offsets, and refitting the
mean on a small new data set (say, surfaces only, a few eV per atom higher)
would shift every prediction by the difference, which training would then
have to undo, at the cost of what the model knew. ``init_offsets: refit`` fits
them on the new training split as a fresh fit does.

Freezing: ``freeze_embedding`` stops training of the element embedding,
``freeze_interactions: N`` that of the first N interaction blocks (their
message and update layers; PaiNN's filter layer, shared by all blocks, stays
trainable).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mlcalc.model.potential import NeuralNetworkPotential
from mlcalc.train.recipe import Recipe, RecipeError


def base_model(recipe: Recipe, elements: list[int], needs_forces: bool) -> NeuralNetworkPotential:
    """The ``init_from`` model, checked against the recipe and the data, frozen as asked."""
    from mlcalc.model.io import load_model
    from mlcalc.pretrained import resolve_model_path

    spec = recipe.model.init_from
    local = Path(recipe.folder) / Path(spec).expanduser()
    path = local if not Path(spec).is_absolute() and local.is_file() else resolve_model_path(spec)
    model = load_model(path, dtype=recipe.model.dtype)
    check_architecture(recipe, model, str(spec))
    unknown = sorted(set(elements) - set(model.elements or elements))
    if unknown:
        from ase.data import chemical_symbols

        raise RecipeError(f"{recipe.source}: model.init_from: the data hold "
                          f"{', '.join(chemical_symbols[z] for z in unknown)}, which {spec} "
                          "was not trained on")
    if needs_forces and not any(m.name == "forces" for m in model.output_modules):
        raise RecipeError(f"{recipe.source}: model.init_from: {spec} computes no forces, "
                          "which the recipe's outputs train")
    freeze(model, recipe.model.freeze_embedding, recipe.model.freeze_interactions, recipe.source)
    return model.train()


def check_architecture(recipe: Recipe, model: NeuralNetworkPotential, spec: str) -> None:
    """Refuse a representation or hyperparameter that differs from the file's; then record
    the file's architecture in the recipe (the run folder's recipe.yaml shows it)."""
    file_hp = dict(model.representation.hyperparameters)
    name = model.representation.name
    if recipe.model.representation not in ("", name):
        raise RecipeError(f"{recipe.source}: model.representation is "
                          f"'{recipe.model.representation}' but {spec} is a {name}; fine-tuning "
                          "takes the architecture from init_from: remove the key")
    for key, value in recipe.model.hyperparameters.items():
        if key not in file_hp or file_hp[key] != value:
            held = f"{file_hp[key]!r}" if key in file_hp else "not a hyperparameter"
            raise RecipeError(f"{recipe.source}: model.{key} is {value!r} but {held} in {spec}; "
                              "fine-tuning takes the architecture from init_from: remove the key")
    recipe.model.representation = name
    recipe.model.hyperparameters = file_hp


def freeze(model: NeuralNetworkPotential, embedding: bool, n_blocks: int, source: str) -> None:
    """Stop training of the embedding and of the first ``n_blocks`` interaction blocks."""
    rep = model.representation
    hp = rep.hyperparameters
    if n_blocks > hp["n_interactions"]:
        raise RecipeError(f"{source}: model.freeze_interactions is {n_blocks} but the model has "
                          f"{hp['n_interactions']} interaction blocks")
    if n_blocks and hp.get("shared_interactions"):
        raise RecipeError(f"{source}: model.freeze_interactions: the model's interaction blocks "
                          "are shared (one set of weights for all)")
    modules: list[nn.Module] = [rep.embedding] if embedding else []
    for k in range(n_blocks):
        if hasattr(rep, "messages"):  # PaiNN
            modules += [rep.messages[k], rep.updates[k]]
        else:  # SchNet and representations with one module per block
            modules.append(rep.interactions[k])
    for module in modules:
        module.requires_grad_(False)
