"""PaiNN: polarizable atom interaction neural network.

K. T. Schütt, O. T. Unke, M. Gastegger, "Equivariant message passing for the
prediction of tensorial properties and molecular spectra", ICML 2021.

Every atom carries scalar features q_i (N, 1, F) and vector features
μ_i (N, 3, F). A *message* step passes rotation-equivariant updates along the
pairs (filters W(d_ij) from a radial basis, directions r̂_ij), an *update*
step mixes the channels of each atom using the invariant norms ‖V μ_i‖.
"""

from __future__ import annotations

import torch
from torch import nn

from mlcalc import kernels
from mlcalc import properties as P
from mlcalc.nn import Dense, get_activation
from mlcalc.nn.radial import CosineCutoff, GaussianRBF
from mlcalc.representation import locality
from mlcalc.representation.base import Representation


class PaiNNMessage(nn.Module):
    """Message step: Δq_i = Σ_j φ_s(q_j)∘W_s, Δμ_i = Σ_j (φ_vv(q_j)∘W_vv) μ_j + (φ_vs∘W_vs) r̂_ij.

    Holds the context network φ = [φ_s | φ_vs | φ_vv]; the sum over pairs is
    :func:`mlcalc.kernels.painn_message`.
    """

    def __init__(self, n_atom_basis: int, activation) -> None:
        super().__init__()
        self.n_atom_basis = n_atom_basis
        self.context_net = nn.Sequential(
            Dense(n_atom_basis, n_atom_basis, activation=activation),
            Dense(n_atom_basis, 3 * n_atom_basis),
        )


class PaiNNUpdate(nn.Module):
    """Update step mixing scalar and vector channels within each atom."""

    def __init__(self, n_atom_basis: int, activation, epsilon: float) -> None:
        super().__init__()
        self.n_atom_basis = n_atom_basis
        self.epsilon = epsilon
        self.channel_mix = Dense(n_atom_basis, 2 * n_atom_basis, bias=False)
        self.context_net = nn.Sequential(
            Dense(2 * n_atom_basis, n_atom_basis, activation=activation),
            Dense(n_atom_basis, 3 * n_atom_basis),
        )

    def forward(self, q: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q (N, F), mu (N, 3, F) -> updated q (N, F), mu (N, 3, F).

        With [V | W] = channel_mix(mu) and [a_vv | a_sv | a_ss] =
        context_net([q | √(‖V‖² + ε)]): q + a_ss + a_sv ⟨V, W⟩ and mu + a_vv W.
        The element-wise parts are :func:`mlcalc.kernels.painn_update_norms`
        and :func:`mlcalc.kernels.painn_update_apply` (fused on CPU).
        """
        mu_vw = self.channel_mix(mu)  # (N, 3, 2F) = [V | W]
        # epsilon keeps the norm smooth where V = 0 (first layer, symmetric sites)
        ctx = self.context_net(kernels.painn_update_norms(q, mu_vw, self.epsilon))  # (N, 3F)
        return kernels.painn_update_apply(q, mu, mu_vw, ctx)


class PaiNN(Representation):
    """PaiNN representation.

    Args:
        n_atom_basis: number of features F per atom (scalar and each vector component).
        n_interactions: number of message + update blocks.
        cutoff: cutoff radius in Å.
        n_rbf: number of radial basis functions.
        radial_basis: ``gaussian`` or ``bessel``.
        cutoff_fn: ``cosine``, ``polynomial`` or ``mollifier``.
        shared_interactions: one set of block weights for all interactions.
        shared_filters: one filter network output for all interactions.
        max_z: largest atomic number that can be embedded.
        activation: ``silu`` (default), ``ssp`` or ``tanh``.
        epsilon: the vector norm is √(‖Vμ‖² + ε). At an atom that is a
            centre of inversion (every atom of a perfect fcc or bcc crystal)
            μ vanishes by symmetry and a tiny ε (1e-8 elsewhere) makes the
            norm behave like ``|x|``: the energy gets a cusp there, the perfect
            crystal is not a smooth minimum and finite-displacement phonons
            are wrong. ε = 1 keeps the energy quadratic for small
            displacements (checked by
            :func:`mlcalc.testing.check_harmonic_at_symmetric_site`).
    """

    name = "painn"

    def __init__(self, n_atom_basis: int = 128, n_interactions: int = 3, cutoff: float = 5.0,
                 n_rbf: int = 20, radial_basis: str = "gaussian", cutoff_fn: str = "cosine",
                 shared_interactions: bool = False, shared_filters: bool = False,
                 max_z: int = 100, activation: str = "silu", epsilon: float = 1.0) -> None:
        super().__init__(cutoff, n_rbf, radial_basis, cutoff_fn)
        self._save_hyperparameters(
            n_atom_basis=n_atom_basis, n_interactions=n_interactions, cutoff=float(cutoff),
            n_rbf=n_rbf, radial_basis=radial_basis, cutoff_fn=cutoff_fn,
            shared_interactions=shared_interactions, shared_filters=shared_filters,
            max_z=max_z, activation=activation, epsilon=epsilon,
        )
        act = get_activation(activation)
        self.n_atom_basis = n_atom_basis
        self.n_interactions = n_interactions
        self.embedding = nn.Embedding(max_z + 1, n_atom_basis, padding_idx=0)
        n_filter_sets = 1 if shared_filters else n_interactions
        self.filter_net = Dense(n_rbf, n_filter_sets * 3 * n_atom_basis)
        n_blocks = 1 if shared_interactions else n_interactions
        self.messages = nn.ModuleList(PaiNNMessage(n_atom_basis, act) for _ in range(n_blocks))
        self.updates = nn.ModuleList(
            PaiNNUpdate(n_atom_basis, act, epsilon) for _ in range(n_blocks)
        )

    def filter_basis(self, geometry: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit vectors (P, 3) and filter basis (P, n_rbf + 1) ``[rbf f_cut | f_cut]`` of pairs.

        With the Gaussian basis and the cosine cutoff (the defaults) one op,
        :func:`mlcalc.kernels.pair_gaussian_basis` (compiled on CPU); other
        bases and cutoffs from :meth:`pair_geometry`.
        """
        if isinstance(self.radial_basis, GaussianRBF) and isinstance(self.cutoff_fn, CosineCutoff):
            return kernels.pair_gaussian_basis(geometry[P.Rij].to(self.dtype),
                                               self.radial_basis.centers, self.radial_basis.coeff,
                                               self.cutoff_fn.cutoff)
        _, u, rbf, fcut = self.pair_geometry(geometry)  # (P,), (P, 3), (P, n_rbf), (P,)
        return u, torch.cat([rbf * fcut[:, None], fcut[:, None]], dim=1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Features of every atom from a half neighbor list.

        The cutoff is folded into the filter layer, ``(rbf Aᵀ + c) f_cut =
        [rbf f_cut, f_cut] [Aᵀ; c]``: a pair's filters are its K = n_rbf + 1
        basis values times one weight matrix, which the message op applies per
        pair (:func:`mlcalc.kernels.painn_filter_message`) instead of a
        (pairs × 3F) filter tensor going to memory. Large batches on CPU are
        evaluated with the atoms in Z-order (:mod:`mlcalc.representation.locality`)
        and the features returned in the input order.
        """
        # large batches in Z-order (rows of neighbors close in memory), undone at the end
        a, b, numbers, geometry, inv = locality.local_inputs(inputs, self.cutoff)
        n_atoms, F = numbers.shape[0], self.n_atom_basis
        order, rowptr = kernels.half_graph(a, b, n_atoms)
        dir_ij, basis = self.filter_basis(geometry)  # (P, 3), (P, n_rbf + 1)
        weight = torch.cat([self.filter_net.weight.T, self.filter_net.bias[None]], dim=0)
        n_sets = weight.shape[1] // (3 * F)
        q = self.embedding(numbers)  # (N, F)
        # vector features: zero before the first message, which then skips their terms
        mu: torch.Tensor | None = None  # (N, 3, F)
        for k in range(self.n_interactions):
            blk = k % len(self.messages)
            s = k % n_sets
            context = self.messages[blk].context_net(q)  # (N, 3F)
            dq, dmu = kernels.painn_filter_message(
                context, basis, weight[:, s * 3 * F:(s + 1) * 3 * F], dir_ij, mu, a, b, order,
                rowptr)
            q, mu = self.updates[blk](q + dq, dmu if mu is None else mu + dmu)
        if mu is None:  # no interactions
            mu = q.new_zeros((n_atoms, 3, F))
        if inv is not None:
            q, mu = q[inv], mu[inv]
        inputs[P.scalar_representation] = q
        inputs[P.vector_representation] = mu
        return inputs
