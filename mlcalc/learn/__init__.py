"""Uncertainty-driven learning loop: committee, exploration, selection, labelling, retraining.

``mlcalc learn recipe.yaml`` or :func:`learn` (any ASE calculator as the reference).
"""

from mlcalc.learn.loop import learn
from mlcalc.learn.recipe import LearnRecipe, load_learn_recipe, parse_learn_recipe

__all__ = ["LearnRecipe", "learn", "load_learn_recipe", "parse_learn_recipe"]
