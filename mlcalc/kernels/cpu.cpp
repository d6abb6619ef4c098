// mlcalc's fused message kernels for SchNet and PaiNN on CPU (forward and backward).
// They are the CPU implementations of the custom ops defined in ops.py; nothing
// else calls them.
//
// The pairs come as a half list: pair p joins atoms a[p] and b[p]; it stands for
// two directed edges, e = p (i = a, j = b, direction +u_p) and e = p + P
// (i = b, j = a, direction -u_p). The filter of a pair serves both edges.
// ``order`` lists the directed edges grouped by their centre atom i, ``rowptr``
// (N + 1) delimits the groups. The forward pass gathers into atom i from its
// edges. The backward pass first writes the filter gradient of every pair from
// its two edges (a loop over pairs), then gathers into atom j by walking the
// group of j and reversing each edge (the reverse of e is e +- P). No two
// threads write the same row, nothing is scattered, and every output row is
// written once (a per-edge filter gradient summed afterwards cost 3x the
// memory traffic of the pair loop at 4000 atoms).
//
// No (edges x 3 x features) tensor is ever formed: every edge reads its filter
// row once and the atom rows it needs, which stay in cache.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kGrain = 8;        // atoms per task of at::parallel_for
constexpr int64_t kPairGrain = 64;   // pairs per task

struct Edge {
  int64_t p;      // pair (filter row)
  int64_t src;    // the neighbor j whose features are gathered
  double sign;    // +1 for e < P, -1 for the reversed edge
};

inline Edge edge(int64_t e, int64_t P, const int64_t* a, const int64_t* b) {
  if (e < P) return {e, b[e], 1.0};
  const int64_t p = e - P;
  return {p, a[p], -1.0};
}

void check_graph(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& order,
                 const torch::Tensor& rowptr, int64_t n_atoms) {
  TORCH_CHECK(a.dtype() == torch::kInt64 && b.dtype() == torch::kInt64 &&
              order.dtype() == torch::kInt64 && rowptr.dtype() == torch::kInt64,
              "mlcalc kernels: index tensors must be int64");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && order.is_contiguous() &&
              rowptr.is_contiguous(), "mlcalc kernels: index tensors must be contiguous");
  TORCH_CHECK(order.numel() == 2 * a.numel() && rowptr.numel() == n_atoms + 1,
              "mlcalc kernels: inconsistent graph sizes");
}

// ---- matrix products on raw row-major buffers -------------------------------
// The filter kernels make two or three small products per tile of pairs (about
// 40 per PaiNN interaction at 108 atoms). Through at::mm_out each one costs
// ~5 us of tensor bookkeeping (narrow, t, resolve_conj, output checks) on top
// of the product; the BLAS that torch itself calls (MKL's sgemm_/dgemm_ in
// torch's x86 wheels) is reached here directly. The symbols are weak: a torch
// built without them (another BLAS, another platform) leaves them null and the
// products go through at::mm_out, with the same results.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc) __attribute__((weak));
}

bool use_blas = true;  // set_direct_blas switches it (tests compare both routes)

bool blas_available() { return sgemm_ != nullptr && dgemm_ != nullptr; }

inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b,
                      const int* ldb, const float* beta, float* c, const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const double* alpha, const double* a, const int* lda, const double* b,
                      const int* ldb, const double* beta, double* c, const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Row-major C (m x n, leading dimension ldc) = op(A) op(B) + beta C, where op(A)
// is m x k (A stored m x k, or k x m when ta) and op(B) is k x n (B stored k x n,
// or n x k when tb). Column-major BLAS sees the transposes: C^T = op(B)^T op(A)^T.
template <typename scalar_t>
void gemm_rows(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const scalar_t* A, int64_t lda,
               const scalar_t* B, int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (use_blas && blas_available() && k > 0 &&
      std::max({m, n, k, lda, ldb, ldc}) <= kMax) {
    const int mi = static_cast<int>(n), ni = static_cast<int>(m), ki = static_cast<int>(k);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const scalar_t one = 1;
    blas_gemm(tb ? "T" : "N", ta ? "T" : "N", &mi, &ni, &ki, &one, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  const auto opts = torch::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto view = [&](const scalar_t* p, int64_t rows, int64_t cols, int64_t ld, bool t) {
    auto v = torch::from_blob(const_cast<scalar_t*>(p), {t ? cols : rows, t ? rows : cols},
                              {ld, 1}, opts);
    return t ? v.t() : v;
  };
  auto out = torch::from_blob(C, {m, n}, {ldc, 1}, opts);
  auto a = view(A, m, k, lda, ta), b = view(B, k, n, ldb, tb);
  if (beta == 0) {
    at::mm_out(out, a, b);
  } else {
    out.mul_(beta).addmm_(a, b);
  }
}

// Runs fn(scalar) for float32 or float64 tensors (a function, not the AT_DISPATCH
// macro, so that the loops inside may carry #pragma omp simd).
template <typename Fn>
void dispatch_float(at::ScalarType t, const char* name, Fn&& fn) {
  if (t == at::kFloat) {
    fn(float{});
  } else if (t == at::kDouble) {
    fn(double{});
  } else {
    TORCH_CHECK(false, name, ": float32 or float64 tensors expected");
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// The directed edges of a half list grouped by centre atom (mlcalc.kernels.half_graph):
// edge e < P has centre a[e], edge e >= P centre b[e - P]. A counting sort, stable
// like torch.argsort(cat(a, b), stable=True), in O(P + N) instead of a comparison
// sort: order (2P,) and rowptr (N + 1,).
std::vector<torch::Tensor> half_graph(torch::Tensor a, torch::Tensor b, int64_t n_atoms) {
  TORCH_CHECK(a.dtype() == torch::kInt64 && b.dtype() == torch::kInt64 && a.dim() == 1 &&
              b.dim() == 1 && a.numel() == b.numel(),
              "half_graph: a and b must be int64 vectors of one length");
  TORCH_CHECK(n_atoms >= 0, "half_graph: n_atoms must be >= 0");
  a = a.contiguous(); b = b.contiguous();
  const int64_t P = a.numel();
  auto rowptr = torch::zeros({n_atoms + 1}, a.options());
  auto order = torch::empty({2 * P}, a.options());
  const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
  int64_t* rp = rowptr.data_ptr<int64_t>();
  int64_t* op = order.data_ptr<int64_t>();
  for (int64_t e = 0; e < 2 * P; ++e) {
    const int64_t c = e < P ? ap[e] : bp[e - P];
    TORCH_CHECK(c >= 0 && c < n_atoms, "half_graph: atom index ", c, " out of range for ",
                n_atoms, " atoms");
    ++rp[c + 1];
  }
  for (int64_t i = 0; i < n_atoms; ++i) rp[i + 1] += rp[i];
  std::vector<int64_t> next(rp, rp + n_atoms);
  for (int64_t e = 0; e < 2 * P; ++e) op[next[e < P ? ap[e] : bp[e - P]]++] = e;
  return {order, rowptr};
}

// ---------------------------------------------------------------------------
// SchNet continuous-filter convolution: out_i = sum_e W_p(e) * x_j(e)   (N, F)
torch::Tensor cfconv_forward(torch::Tensor x, torch::Tensor W, torch::Tensor a,
                             torch::Tensor b, torch::Tensor order, torch::Tensor rowptr) {
  const int64_t N = x.size(0), F = x.size(1), P = a.numel();
  check_graph(a, b, order, rowptr, N);
  TORCH_CHECK(W.size(0) == P && W.size(1) == F, "cfconv: filter shape");
  x = x.contiguous();
  W = W.contiguous();
  auto out = torch::zeros_like(x);
  dispatch_float(x.scalar_type(), "cfconv_forward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    const scalar_t* __restrict wp = W.data_ptr<scalar_t>();
    scalar_t* __restrict op = out.data_ptr<scalar_t>();
    const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
    const int64_t *ord = order.data_ptr<int64_t>(), *rp = rowptr.data_ptr<int64_t>();
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* __restrict o = op + i * F;
        for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
          const Edge ed = edge(ord[k], P, ap, bp);
          const scalar_t* __restrict w = wp + ed.p * F;
          const scalar_t* __restrict xj = xp + ed.src * F;
#pragma omp simd
          for (int64_t f = 0; f < F; ++f) o[f] += w[f] * xj[f];
        }
      }
    });
  });
  return out;
}

// The pair product of two atom tensors, the filter gradient of cfconv:
//   out_p = g_a x_b + g_b x_a                               (P, F)
// (the gradient of cfconv with respect to x is cfconv(grad, W) itself, because
// both edges of a pair share its filter; see mlcalc/kernels/ops.py).
torch::Tensor pair_product(torch::Tensor g, torch::Tensor x, torch::Tensor a, torch::Tensor b) {
  const int64_t F = x.size(1), P = a.numel();
  TORCH_CHECK(a.dtype() == torch::kInt64 && b.dtype() == torch::kInt64 && a.is_contiguous() &&
              b.is_contiguous(), "pair_product: index tensors must be contiguous int64");
  TORCH_CHECK(g.sizes() == x.sizes() && b.numel() == P, "pair_product: shapes");
  g = g.contiguous();
  x = x.contiguous();
  auto out = torch::empty({P, F}, x.options());
  dispatch_float(x.scalar_type(), "pair_product", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict gp = g.data_ptr<scalar_t>();
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    scalar_t* __restrict op = out.data_ptr<scalar_t>();
    const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
    at::parallel_for(0, P, kPairGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t* __restrict ga = gp + ap[p] * F;
        const scalar_t* __restrict gb = gp + bp[p] * F;
        const scalar_t* __restrict xa = xp + ap[p] * F;
        const scalar_t* __restrict xb = xp + bp[p] * F;
        scalar_t* __restrict o = op + p * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) o[f] = ga[f] * xb[f] + gb[f] * xa[f];
      }
    });
  });
  return out;
}

// The backward of cfconv in one call: gx = cfconv(grad, W) (the same gather, both
// edges of a pair share W) and gW = pair_product(grad, x).
std::vector<torch::Tensor> cfconv_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor W,
                                           torch::Tensor a, torch::Tensor b, torch::Tensor order,
                                           torch::Tensor rowptr) {
  return {cfconv_forward(grad, W, a, b, order, rowptr), pair_product(grad, x, a, b)};
}

// ---------------------------------------------------------------------------
// PaiNN message. x (N, 3F) = [x_s | x_vs | x_vv] context features, W (P, 3F) filters,
// u (P, 3) unit vectors a -> b, mu (N, 3, F) vector features.
//   dq_i       = sum_e W_s x_s,j
//   dmu_i[c]   = sum_e (W_vs x_vs,j) s_e u_c + (W_vv x_vv,j) mu_j[c]
std::vector<torch::Tensor> painn_message_forward(torch::Tensor x, torch::Tensor W,
                                                 torch::Tensor u, torch::Tensor mu,
                                                 torch::Tensor a, torch::Tensor b,
                                                 torch::Tensor order, torch::Tensor rowptr) {
  const int64_t N = x.size(0), F = mu.size(2), P = a.numel();
  check_graph(a, b, order, rowptr, N);
  TORCH_CHECK(x.size(1) == 3 * F && W.size(0) == P && W.size(1) == 3 * F &&
              u.size(0) == P && u.size(1) == 3 && mu.size(0) == N && mu.size(1) == 3,
              "painn_message: shapes");
  x = x.contiguous(); W = W.contiguous(); u = u.contiguous(); mu = mu.contiguous();
  auto dq = torch::zeros({N, F}, x.options());
  auto dmu = torch::zeros({N, 3, F}, x.options());
  dispatch_float(x.scalar_type(), "painn_message_forward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    const scalar_t* __restrict wp = W.data_ptr<scalar_t>();
    const scalar_t* __restrict up = u.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu.data_ptr<scalar_t>();
    scalar_t* __restrict dqp = dq.data_ptr<scalar_t>();
    scalar_t* __restrict dmp = dmu.data_ptr<scalar_t>();
    const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
    const int64_t *ord = order.data_ptr<int64_t>(), *rp = rowptr.data_ptr<int64_t>();
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* __restrict oq = dqp + i * F;
        scalar_t* __restrict o0 = dmp + i * 3 * F;
        scalar_t* __restrict o1 = o0 + F;
        scalar_t* __restrict o2 = o0 + 2 * F;
        for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
          const Edge ed = edge(ord[k], P, ap, bp);
          const scalar_t* __restrict w = wp + ed.p * 3 * F;
          const scalar_t* __restrict xj = xp + ed.src * 3 * F;
          const scalar_t* __restrict m0 = mp + ed.src * 3 * F;
          const scalar_t* __restrict m1 = m0 + F;
          const scalar_t* __restrict m2 = m0 + 2 * F;
          const scalar_t s = static_cast<scalar_t>(ed.sign);
          const scalar_t u0 = s * up[ed.p * 3], u1 = s * up[ed.p * 3 + 1],
                         u2 = s * up[ed.p * 3 + 2];
#pragma omp simd
          for (int64_t f = 0; f < F; ++f) {
            oq[f] += w[f] * xj[f];
            const scalar_t vs = w[F + f] * xj[F + f];
            const scalar_t vv = w[2 * F + f] * xj[2 * F + f];
            o0[f] += vs * u0 + vv * m0[f];
            o1[f] += vs * u1 + vv * m1[f];
            o2[f] += vs * u2 + vv * m2[f];
          }
        }
      }
    });
  });
  return {dq, dmu};
}

// Backward of painn_message_forward: gradients for x, W, u and mu, in two passes
// that each write every output row once.
//   pairs: the filter gradient of pair p from both of its edges (needs no filter)
//   atoms: for every atom j, the gradients of its context x_j and vector features
//          mu_j from the edges i -> j, and the direction gradient of each edge.
std::vector<torch::Tensor> painn_message_backward(torch::Tensor gq, torch::Tensor gmu,
                                                  torch::Tensor x, torch::Tensor W,
                                                  torch::Tensor u, torch::Tensor mu,
                                                  torch::Tensor a, torch::Tensor b,
                                                  torch::Tensor order, torch::Tensor rowptr) {
  const int64_t N = x.size(0), F = mu.size(2), P = a.numel();
  check_graph(a, b, order, rowptr, N);
  gq = gq.contiguous(); gmu = gmu.contiguous();
  x = x.contiguous(); W = W.contiguous(); u = u.contiguous(); mu = mu.contiguous();
  auto gx = torch::zeros_like(x);
  auto gmu_in = torch::zeros_like(mu);
  auto gW = torch::empty({P, 3 * F}, W.options());
  auto gu_edge = torch::empty({2 * P, 3}, u.options());
  dispatch_float(x.scalar_type(), "painn_message_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict gqp = gq.data_ptr<scalar_t>();
    const scalar_t* __restrict gmp = gmu.data_ptr<scalar_t>();
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    const scalar_t* __restrict wp = W.data_ptr<scalar_t>();
    const scalar_t* __restrict up = u.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu.data_ptr<scalar_t>();
    scalar_t* __restrict gxp = gx.data_ptr<scalar_t>();
    scalar_t* __restrict gmip = gmu_in.data_ptr<scalar_t>();
    scalar_t* __restrict gwp = gW.data_ptr<scalar_t>();
    scalar_t* __restrict gup = gu_edge.data_ptr<scalar_t>();
    const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
    const int64_t *ord = order.data_ptr<int64_t>(), *rp = rowptr.data_ptr<int64_t>();

    // Pass 1, over pairs. Edge a <- b (centre a, direction +u) and edge b <- a
    // (centre b, direction -u) both use the filter row of p.
    at::parallel_for(0, P, kPairGrain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t ia = ap[p], ib = bp[p];
        const scalar_t u0 = up[p * 3], u1 = up[p * 3 + 1], u2 = up[p * 3 + 2];
        const scalar_t* __restrict gqa = gqp + ia * F;
        const scalar_t* __restrict gqb = gqp + ib * F;
        const scalar_t* __restrict ga0 = gmp + ia * 3 * F;
        const scalar_t* __restrict ga1 = ga0 + F;
        const scalar_t* __restrict ga2 = ga0 + 2 * F;
        const scalar_t* __restrict gb0 = gmp + ib * 3 * F;
        const scalar_t* __restrict gb1 = gb0 + F;
        const scalar_t* __restrict gb2 = gb0 + 2 * F;
        const scalar_t* __restrict xa = xp + ia * 3 * F;
        const scalar_t* __restrict xb = xp + ib * 3 * F;
        const scalar_t* __restrict ma0 = mp + ia * 3 * F;
        const scalar_t* __restrict ma1 = ma0 + F;
        const scalar_t* __restrict ma2 = ma0 + 2 * F;
        const scalar_t* __restrict mb0 = mp + ib * 3 * F;
        const scalar_t* __restrict mb1 = mb0 + F;
        const scalar_t* __restrict mb2 = mb0 + 2 * F;
        scalar_t* __restrict gw = gwp + p * 3 * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {
          gw[f] = gqa[f] * xb[f] + gqb[f] * xa[f];
          const scalar_t sa = ga0[f] * u0 + ga1[f] * u1 + ga2[f] * u2;  // centre a: +u
          const scalar_t sb = gb0[f] * u0 + gb1[f] * u1 + gb2[f] * u2;  // centre b: -u
          gw[F + f] = xb[F + f] * sa - xa[F + f] * sb;
          const scalar_t va = ga0[f] * mb0[f] + ga1[f] * mb1[f] + ga2[f] * mb2[f];
          const scalar_t vb = gb0[f] * ma0[f] + gb1[f] * ma1[f] + gb2[f] * ma2[f];
          gw[2 * F + f] = xb[2 * F + f] * va + xa[2 * F + f] * vb;
        }
      }
    });

    // Pass 2, over atoms j: the edges i -> j are the reverses of j's own edges.
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const scalar_t* __restrict xvs = xp + j * 3 * F + F;
        const scalar_t* __restrict xvv = xp + j * 3 * F + 2 * F;
        const scalar_t* __restrict m0 = mp + j * 3 * F;
        const scalar_t* __restrict m1 = m0 + F;
        const scalar_t* __restrict m2 = m0 + 2 * F;
        scalar_t* __restrict gxs = gxp + j * 3 * F;
        scalar_t* __restrict gxvs = gxs + F;
        scalar_t* __restrict gxvv = gxs + 2 * F;
        scalar_t* __restrict gm0 = gmip + j * 3 * F;
        scalar_t* __restrict gm1 = gm0 + F;
        scalar_t* __restrict gm2 = gm0 + 2 * F;
        for (int64_t k = rp[j]; k < rp[j + 1]; ++k) {
          const int64_t rev = ord[k];                      // edge j -> i
          const int64_t e = rev < P ? rev + P : rev - P;   // edge i -> j (source j)
          const Edge er = edge(rev, P, ap, bp);
          const int64_t i = er.src;
          const scalar_t s = static_cast<scalar_t>(-er.sign);  // sign of e
          const scalar_t u0 = s * up[er.p * 3], u1 = s * up[er.p * 3 + 1],
                         u2 = s * up[er.p * 3 + 2];
          const scalar_t* __restrict w = wp + er.p * 3 * F;
          const scalar_t* __restrict gqi = gqp + i * F;
          const scalar_t* __restrict g0 = gmp + i * 3 * F;
          const scalar_t* __restrict g1 = g0 + F;
          const scalar_t* __restrict g2 = g0 + 2 * F;
          scalar_t gd0 = 0, gd1 = 0, gd2 = 0;
#pragma omp simd reduction(+ : gd0, gd1, gd2)
          for (int64_t f = 0; f < F; ++f) {
            gxs[f] += gqi[f] * w[f];
            const scalar_t svs = g0[f] * u0 + g1[f] * u1 + g2[f] * u2;
            gxvs[f] += w[F + f] * svs;
            const scalar_t vs = w[F + f] * xvs[f];
            gd0 += g0[f] * vs;
            gd1 += g1[f] * vs;
            gd2 += g2[f] * vs;
            const scalar_t svv = g0[f] * m0[f] + g1[f] * m1[f] + g2[f] * m2[f];
            gxvv[f] += w[2 * F + f] * svv;
            const scalar_t vv = w[2 * F + f] * xvv[f];
            gm0[f] += g0[f] * vv;
            gm1[f] += g1[f] * vv;
            gm2[f] += g2[f] * vv;
          }
          // the edge's direction is s*u_p: its gradient reaches u_p with the sign s
          gup[e * 3] = s * gd0;
          gup[e * 3 + 1] = s * gd1;
          gup[e * 3 + 2] = s * gd2;
        }
      }
    });
  });
  auto gu = gu_edge.narrow(0, 0, P) + gu_edge.narrow(0, P, P);
  return {gx, gW, gu, gmu_in};
}

// ---------------------------------------------------------------------------
// PaiNN message with the filters made inside the op: W_p = basis_p Wt,
// basis (P, K), Wt (K, 3F) (PaiNN's radial basis times the cutoff, and the
// cutoff, against the filter layer's weights and bias).
//
// The pairs are taken in tiles: a tile's filters come from one
// matrix product into a buffer that stays in cache, and each pair then adds its
// two edges to both of its atoms (a scatter, safe with one writer). The (P x 3F)
// filter matrix and its gradient, which outgrow the cache beyond a few hundred
// pairs, never go to memory; the backward makes a tile's filters again (one
// more product), which measured faster than keeping them from the forward
// (108-2048 atoms, Zen 4). Tiles of 24-1536 KiB: 96 KiB and up alike within
// noise, 24 KiB 30 % slower (the products' fixed cost).

namespace {

// bytes of a (tile x 3F) buffer; set_pair_tile_bytes changes it (benchmarks)
int64_t pair_tile_bytes = 256 * 1024;

int64_t pair_tile(int64_t F, int64_t itemsize) {
  return std::max<int64_t>(16, pair_tile_bytes / (3 * F * itemsize));
}

void check_filter(const torch::Tensor& x, const torch::Tensor& basis, const torch::Tensor& Wt,
                  const torch::Tensor& u, const c10::optional<torch::Tensor>& mu, int64_t P) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) % 3 == 0, "painn_filter_message: shapes");
  const int64_t N = x.size(0), F = x.size(1) / 3;
  TORCH_CHECK(basis.dim() == 2 && basis.size(0) == P && Wt.dim() == 2 &&
              Wt.size(0) == basis.size(1) && Wt.size(1) == 3 * F && u.dim() == 2 &&
              u.size(0) == P && u.size(1) == 3, "painn_filter_message: shapes");
  TORCH_CHECK(basis.scalar_type() == x.scalar_type() && Wt.scalar_type() == x.scalar_type() &&
              u.scalar_type() == x.scalar_type(), "painn_filter_message: one floating dtype expected");
  if (mu.has_value()) {
    TORCH_CHECK(mu->dim() == 3 && mu->size(0) == N && mu->size(1) == 3 && mu->size(2) == F,
                "painn_filter_message: shapes");
    TORCH_CHECK(mu->scalar_type() == x.scalar_type(),
                "painn_filter_message: one floating dtype expected");
  }
}

}  // namespace

// Threads: the tiles are split among the threads; each scatters into its own
// copy of the atom rows (thread 0 into the output), summed at the end. Where
// those copies would pass this size the whole-filter route is taken instead.
constexpr int64_t kPrivateBytes = 256 * 1024 * 1024;

// dq_i = sum_e W_s x_s,j;  dmu_i[c] = sum_e (W_vs x_vs,j) s_e u_c + (W_vv x_vv,j) mu_j[c]
//
// Without mu (PaiNN's first interaction, where the vector features are still
// zero) the W_vv terms vanish: the tiles hold only the [W_s | W_vs] columns
// (two thirds of the product) and the loop skips the mu rows.
std::vector<torch::Tensor> painn_filter_message_forward(
    torch::Tensor x, torch::Tensor basis, torch::Tensor Wt, torch::Tensor u,
    c10::optional<torch::Tensor> mu_opt, torch::Tensor a, torch::Tensor b, torch::Tensor order,
    torch::Tensor rowptr) {
  const int64_t N = x.size(0), P = a.numel(), K = basis.size(1);
  check_graph(a, b, order, rowptr, N);
  check_filter(x, basis, Wt, u, mu_opt, P);
  const int64_t F = x.size(1) / 3;
  const bool has_mu = mu_opt.has_value();
  const int64_t C = has_mu ? 3 * F : 2 * F;  // filter columns used
  const int64_t T = pair_tile(F, x.element_size());
  const int64_t n_tiles = (P + T - 1) / T;
  // inside a parallel region (a caller's own at::parallel_for) everything runs
  // on the calling thread: one set of rows
  const bool nested = at::in_parallel_region();
  const int64_t n_threads = n_tiles > 1 && !nested ? at::get_num_threads() : 1;
  if ((n_threads - 1) * N * 4 * F * x.element_size() > kPrivateBytes) {
    auto mu = has_mu ? *mu_opt : torch::zeros({N, 3, F}, x.options());
    return painn_message_forward(x, at::mm(basis, Wt), u, mu, a, b, order, rowptr);
  }
  // detached: the products below run on torch's worker threads too, where the
  // dispatcher's "below autograd" state of this thread does not hold
  x = x.contiguous(); basis = basis.contiguous().detach();
  const auto Wc = Wt.contiguous().detach().narrow(1, 0, C);
  u = u.contiguous();
  const auto mu = has_mu ? mu_opt->contiguous() : x;  // without mu, mp is never read
  auto dq = torch::zeros({N, F}, x.options());
  auto dmu = torch::zeros({N, 3, F}, x.options());
  auto dq_more = torch::zeros({n_threads - 1, N, F}, x.options());      // threads 1, 2, ...
  auto dmu_more = torch::zeros({n_threads - 1, N, 3, F}, x.options());
  dispatch_float(x.scalar_type(), "painn_filter_message_forward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    const scalar_t* __restrict up = u.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu.data_ptr<scalar_t>();
    const scalar_t* basp = basis.data_ptr<scalar_t>();  // (P, K)
    const scalar_t* wtp = Wc.data_ptr<scalar_t>();  // (K, C) columns of Wt (K, 3F)
    const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
    at::parallel_for(0, n_tiles, 1, [&](int64_t tile0, int64_t tile1) {
      const int64_t tid = nested ? 0 : at::get_thread_num();
      TORCH_CHECK(tid < n_threads, "painn_filter_message: unexpected thread number");
      scalar_t* __restrict dqp = tid == 0 ? dq.data_ptr<scalar_t>()
                                          : dq_more.data_ptr<scalar_t>() + (tid - 1) * N * F;
      scalar_t* __restrict dmp = tid == 0 ? dmu.data_ptr<scalar_t>()
                                          : dmu_more.data_ptr<scalar_t>() + (tid - 1) * N * 3 * F;
      auto tile = torch::empty({std::min(T, P), C}, x.options());
      scalar_t* __restrict wp = tile.data_ptr<scalar_t>();
      for (int64_t p0 = tile0 * T; p0 < std::min(P, tile1 * T); p0 += T) {
        const int64_t n = std::min(T, P - p0);
        gemm_rows<scalar_t>(false, false, n, C, K, basp + p0 * K, K, wtp, 3 * F, 0, wp, C);
        for (int64_t t = 0; t < n; ++t) {
          const int64_t p = p0 + t, ia = ap[p], ib = bp[p];
          const scalar_t* __restrict w = wp + t * C;
          const scalar_t u0 = up[p * 3], u1 = up[p * 3 + 1], u2 = up[p * 3 + 2];
          const scalar_t* __restrict xa = xp + ia * 3 * F;
          const scalar_t* __restrict xb = xp + ib * 3 * F;
          const scalar_t* __restrict ma = mp + ia * 3 * F;
          const scalar_t* __restrict mb = mp + ib * 3 * F;
          scalar_t* __restrict qa = dqp + ia * F;
          scalar_t* __restrict qb = dqp + ib * F;
          scalar_t* __restrict oa = dmp + ia * 3 * F;
          scalar_t* __restrict ob = dmp + ib * 3 * F;
          if (ia == ib) {  // an atom and its own image: two edges into one row
            for (int64_t f = 0; f < F; ++f) {
              qa[f] += 2 * w[f] * xa[f];
              if (!has_mu) continue;
              const scalar_t vv = 2 * w[2 * F + f] * xa[2 * F + f];
              for (int c = 0; c < 3; ++c) oa[c * F + f] += vv * ma[c * F + f];
            }  // the direction terms of the two edges (+u, -u) cancel
            continue;
          }
          if (!has_mu) {
#pragma omp simd
            for (int64_t f = 0; f < F; ++f) {
              const scalar_t ws = w[f], wvs = w[F + f];
              qa[f] += ws * xb[f];
              qb[f] += ws * xa[f];
              const scalar_t vsb = wvs * xb[F + f], vsa = wvs * xa[F + f];
              oa[f] += vsb * u0;
              oa[F + f] += vsb * u1;
              oa[2 * F + f] += vsb * u2;
              ob[f] -= vsa * u0;
              ob[F + f] -= vsa * u1;
              ob[2 * F + f] -= vsa * u2;
            }
            continue;
          }
#pragma omp simd
          for (int64_t f = 0; f < F; ++f) {
            const scalar_t ws = w[f], wvs = w[F + f], wvv = w[2 * F + f];
            qa[f] += ws * xb[f];
            qb[f] += ws * xa[f];
            const scalar_t vsb = wvs * xb[F + f], vvb = wvv * xb[2 * F + f];  // edge a <- b, +u
            const scalar_t vsa = wvs * xa[F + f], vva = wvv * xa[2 * F + f];  // edge b <- a, -u
            oa[f] += vsb * u0 + vvb * mb[f];
            oa[F + f] += vsb * u1 + vvb * mb[F + f];
            oa[2 * F + f] += vsb * u2 + vvb * mb[2 * F + f];
            ob[f] += vva * ma[f] - vsa * u0;
            ob[F + f] += vva * ma[F + f] - vsa * u1;
            ob[2 * F + f] += vva * ma[2 * F + f] - vsa * u2;
          }
        }
      }
    });
  });
  if (n_threads > 1) {
    dq.add_(dq_more.sum(0));
    dmu.add_(dmu_more.sum(0));
  }
  return {dq, dmu};
}

// Backward of painn_filter_message_forward: gradients for x, basis, Wt (zeros
// unless want_wt), u and mu (an empty (0, 3, F) tensor without mu, whose W_vv
// terms and gradients are zero: only the [W_s | W_vs] columns are made, and
// Wt's W_vv columns get a zero gradient). Per tile of pairs: the filters (one product), then
// every pair's filter gradient gW (into a second tile buffer) and its two edges'
// gradients for x, mu (scattered to both atoms) and u; then g_basis = gW Wt^T
// and gWt += basis^T gW, one product each. Threads as in the forward.
std::vector<torch::Tensor> painn_filter_message_backward(
    torch::Tensor gq, torch::Tensor gmu, torch::Tensor x, torch::Tensor basis, torch::Tensor Wt,
    torch::Tensor u, c10::optional<torch::Tensor> mu_opt, torch::Tensor a, torch::Tensor b,
    torch::Tensor order, torch::Tensor rowptr, bool want_wt) {
  const int64_t N = x.size(0), P = a.numel(), K = basis.size(1);
  check_graph(a, b, order, rowptr, N);
  check_filter(x, basis, Wt, u, mu_opt, P);
  const int64_t F = x.size(1) / 3;
  const bool has_mu = mu_opt.has_value();
  const int64_t C = has_mu ? 3 * F : 2 * F;  // filter columns used
  const int64_t T = pair_tile(F, x.element_size());
  const int64_t n_tiles = (P + T - 1) / T;
  // inside a parallel region (a caller's own at::parallel_for) everything runs
  // on the calling thread: one set of rows
  const bool nested = at::in_parallel_region();
  const int64_t n_threads = n_tiles > 1 && !nested ? at::get_num_threads() : 1;
  if ((n_threads - 1) * N * 6 * F * x.element_size() > kPrivateBytes) {
    auto mu = has_mu ? *mu_opt : torch::zeros({N, 3, F}, x.options());
    auto g = painn_message_backward(gq, gmu, x, at::mm(basis, Wt), u, mu, a, b, order, rowptr);
    auto gwt = want_wt ? at::mm(basis.t(), g[1]) : torch::zeros_like(Wt);
    auto gm = has_mu ? g[3] : torch::empty({0, 3, F}, x.options());
    return {g[0], at::mm(g[1], Wt.t()), gwt, g[2], gm};
  }
  gq = gq.contiguous(); gmu = gmu.contiguous(); x = x.contiguous();
  basis = basis.contiguous().detach();  // detached as in the forward
  const auto Wc = Wt.contiguous().detach().narrow(1, 0, C);
  const auto WcT = Wc.t().contiguous();
  u = u.contiguous();
  // without mu, mp is never read (the loop below skips its terms)
  const auto mu = has_mu ? mu_opt->contiguous() : x;
  auto gx = torch::zeros_like(x);
  auto gmu_in = has_mu ? torch::zeros_like(mu) : torch::empty({0, 3, F}, x.options());
  auto gbasis = torch::empty({P, K}, x.options());
  auto gu = torch::empty({P, 3}, x.options());
  auto gx_more = torch::zeros({n_threads - 1, N, 3 * F}, x.options());   // threads 1, 2, ...
  auto gmi_more = torch::zeros({has_mu ? n_threads - 1 : 0, N, 3, F}, x.options());
  auto gwt_all = torch::zeros({want_wt ? n_threads : 0, K, 3 * F}, x.options());
  dispatch_float(x.scalar_type(), "painn_filter_message_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict gqp = gq.data_ptr<scalar_t>();
    const scalar_t* __restrict gmp = gmu.data_ptr<scalar_t>();
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    const scalar_t* __restrict up = u.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu.data_ptr<scalar_t>();
    scalar_t* __restrict gup = gu.data_ptr<scalar_t>();
    const scalar_t* basp = basis.data_ptr<scalar_t>();  // (P, K)
    const scalar_t* wtp = Wc.data_ptr<scalar_t>();  // (K, C) columns of Wt (K, 3F)
    const scalar_t* wctp = WcT.data_ptr<scalar_t>();  // (C, K)
    scalar_t* gbasp = gbasis.data_ptr<scalar_t>();
    const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
    at::parallel_for(0, n_tiles, 1, [&](int64_t tile0, int64_t tile1) {
      const int64_t tid = nested ? 0 : at::get_thread_num();
      TORCH_CHECK(tid < n_threads, "painn_filter_message: unexpected thread number");
      scalar_t* __restrict gxp = tid == 0 ? gx.data_ptr<scalar_t>()
                                          : gx_more.data_ptr<scalar_t>() + (tid - 1) * N * 3 * F;
      scalar_t* __restrict gmip = !has_mu ? nullptr : tid == 0
          ? gmu_in.data_ptr<scalar_t>() : gmi_more.data_ptr<scalar_t>() + (tid - 1) * N * 3 * F;
      auto tile = torch::empty({std::min(T, P), C}, x.options());
      auto gtile = torch::empty({std::min(T, P), C}, x.options());
      scalar_t* __restrict wp = tile.data_ptr<scalar_t>();
      scalar_t* __restrict gwp = gtile.data_ptr<scalar_t>();
      scalar_t* gwtp = want_wt ? gwt_all.select(0, tid).data_ptr<scalar_t>() : nullptr;
      for (int64_t p0 = tile0 * T; p0 < std::min(P, tile1 * T); p0 += T) {
        const int64_t n = std::min(T, P - p0);
        const scalar_t* bs = basp + p0 * K;  // the tile's basis rows (n, K)
        gemm_rows<scalar_t>(false, false, n, C, K, bs, K, wtp, 3 * F, 0, wp, C);
        for (int64_t t = 0; t < n; ++t) {
          const int64_t p = p0 + t, ia = ap[p], ib = bp[p];
          const scalar_t* __restrict w = wp + t * C;
          scalar_t* __restrict gw = gwp + t * C;
          const scalar_t u0 = up[p * 3], u1 = up[p * 3 + 1], u2 = up[p * 3 + 2];
          const scalar_t* __restrict gqa = gqp + ia * F;
          const scalar_t* __restrict gqb = gqp + ib * F;
          const scalar_t* __restrict ga = gmp + ia * 3 * F;
          const scalar_t* __restrict gb = gmp + ib * 3 * F;
          const scalar_t* __restrict xa = xp + ia * 3 * F;
          const scalar_t* __restrict xb = xp + ib * 3 * F;
          const scalar_t* __restrict ma = mp + ia * 3 * F;
          const scalar_t* __restrict mb = mp + ib * 3 * F;
          scalar_t d0 = 0, d1 = 0, d2 = 0;
          if (ia == ib) {  // an atom and its own image: both edges on one row
            scalar_t* __restrict gxa = gxp + ia * 3 * F;
            scalar_t* __restrict gma = has_mu ? gmip + ia * 3 * F : nullptr;
            for (int64_t f = 0; f < F; ++f) {
              gw[f] = 2 * gqa[f] * xa[f];
              gw[F + f] = 0;  // +u and -u
              gxa[f] += 2 * gqa[f] * w[f];
              if (!has_mu) continue;
              scalar_t v = 0;
              for (int c = 0; c < 3; ++c) v += ga[c * F + f] * ma[c * F + f];
              gw[2 * F + f] = 2 * xa[2 * F + f] * v;
              gxa[2 * F + f] += 2 * w[2 * F + f] * v;
              for (int c = 0; c < 3; ++c)
                gma[c * F + f] += 2 * ga[c * F + f] * w[2 * F + f] * xa[2 * F + f];
            }
            gup[p * 3] = 0; gup[p * 3 + 1] = 0; gup[p * 3 + 2] = 0;
            continue;
          }
          scalar_t* __restrict gxa = gxp + ia * 3 * F;
          scalar_t* __restrict gxb = gxp + ib * 3 * F;
          if (!has_mu) {  // no W_vv terms, nothing for mu
#pragma omp simd reduction(+ : d0, d1, d2)
            for (int64_t f = 0; f < F; ++f) {
              const scalar_t ws = w[f], wvs = w[F + f];
              const scalar_t ga0 = ga[f], ga1 = ga[F + f], ga2 = ga[2 * F + f];
              const scalar_t gb0 = gb[f], gb1 = gb[F + f], gb2 = gb[2 * F + f];
              const scalar_t sa = ga0 * u0 + ga1 * u1 + ga2 * u2;
              const scalar_t sb = gb0 * u0 + gb1 * u1 + gb2 * u2;
              gw[f] = gqa[f] * xb[f] + gqb[f] * xa[f];
              gw[F + f] = xb[F + f] * sa - xa[F + f] * sb;
              gxb[f] += gqa[f] * ws;
              gxa[f] += gqb[f] * ws;
              gxb[F + f] += wvs * sa;
              gxa[F + f] -= wvs * sb;
              const scalar_t vsb = wvs * xb[F + f], vsa = wvs * xa[F + f];
              d0 += ga0 * vsb - gb0 * vsa;
              d1 += ga1 * vsb - gb1 * vsa;
              d2 += ga2 * vsb - gb2 * vsa;
            }
            gup[p * 3] = d0; gup[p * 3 + 1] = d1; gup[p * 3 + 2] = d2;
            continue;
          }
          scalar_t* __restrict gma = gmip + ia * 3 * F;
          scalar_t* __restrict gmb = gmip + ib * 3 * F;
#pragma omp simd reduction(+ : d0, d1, d2)
          for (int64_t f = 0; f < F; ++f) {
            const scalar_t ws = w[f], wvs = w[F + f], wvv = w[2 * F + f];
            const scalar_t ga0 = ga[f], ga1 = ga[F + f], ga2 = ga[2 * F + f];
            const scalar_t gb0 = gb[f], gb1 = gb[F + f], gb2 = gb[2 * F + f];
            // edge a <- b (centre a, source b, +u) and edge b <- a (centre b, source a, -u)
            const scalar_t sa = ga0 * u0 + ga1 * u1 + ga2 * u2;
            const scalar_t sb = gb0 * u0 + gb1 * u1 + gb2 * u2;
            const scalar_t va = ga0 * mb[f] + ga1 * mb[F + f] + ga2 * mb[2 * F + f];
            const scalar_t vb = gb0 * ma[f] + gb1 * ma[F + f] + gb2 * ma[2 * F + f];
            gw[f] = gqa[f] * xb[f] + gqb[f] * xa[f];
            gw[F + f] = xb[F + f] * sa - xa[F + f] * sb;
            gw[2 * F + f] = xb[2 * F + f] * va + xa[2 * F + f] * vb;
            gxb[f] += gqa[f] * ws;
            gxa[f] += gqb[f] * ws;
            gxb[F + f] += wvs * sa;
            gxa[F + f] -= wvs * sb;
            gxb[2 * F + f] += wvv * va;
            gxa[2 * F + f] += wvv * vb;
            const scalar_t vsb = wvs * xb[F + f], vsa = wvs * xa[F + f];
            d0 += ga0 * vsb - gb0 * vsa;
            d1 += ga1 * vsb - gb1 * vsa;
            d2 += ga2 * vsb - gb2 * vsa;
            const scalar_t vvb = wvv * xb[2 * F + f], vva = wvv * xa[2 * F + f];
            gmb[f] += ga0 * vvb;
            gmb[F + f] += ga1 * vvb;
            gmb[2 * F + f] += ga2 * vvb;
            gma[f] += gb0 * vva;
            gma[F + f] += gb1 * vva;
            gma[2 * F + f] += gb2 * vva;
          }
          gup[p * 3] = d0; gup[p * 3 + 1] = d1; gup[p * 3 + 2] = d2;
        }
        // the basis gradient gW Wc^T straight into its rows (n, K), against the
        // transposed weights (C, K): the faster layout for the product's
        // 21 output columns (124 vs 105 GFLOP/s on a Xeon, 1 thread)
        gemm_rows<scalar_t>(false, false, n, K, C, gwp, C, wctp, K, 0, gbasp + p0 * K, K);
        if (want_wt)  // gWt[:, :C] += basis^T gW
          gemm_rows<scalar_t>(true, false, K, C, n, bs, K, gwp, C, 1, gwtp, 3 * F);
      }
    });
  });
  if (n_threads > 1) {
    gx.add_(gx_more.sum(0));
    if (has_mu) gmu_in.add_(gmi_more.sum(0));
  }
  auto gwt = want_wt ? gwt_all.sum(0) : torch::zeros({K, 3 * F}, x.options());
  return {gx, gbasis, gwt, gu, gmu_in};
}

// ---------------------------------------------------------------------------
// PaiNN's pair geometry (geometry_ops.py): u = r / d and basis = [g_k(d) f(d) | f(d)]
// with g_k = exp(max(coeff (d - c_k)^2, -60)) and the cosine cutoff f, and the
// gradient for r. One pass over the pairs; torch's version is ~15 element-wise
// ops over (P, K) forward and ~20 backward.

namespace {

constexpr double kGaussianFloor = -60.0;  // mlcalc.nn.radial.GAUSSIAN_FLOOR

// exp for float32 that the compiler vectorises (a libm call it would not):
// x = n ln2 + f with |f| <= ln2 / 2 (ln2 in two parts, Cody and Waite), e^f from
// Cephes' degree-6 polynomial (within ~1 ulp of expf), 2^n from the exponent
// bits. x is held to [-87, 88], where 2^n is a normal float; the Gaussians
// need [-60, 0].
inline float exp_vec(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float f = x - n * 0.693359375f;
  f = f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  const float y = p * f * f + f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}
inline double exp_vec(double x) { return std::exp(x); }  // float64: the accurate path

void check_geometry(const torch::Tensor& r, const torch::Tensor& centers,
                    const torch::Tensor& coeff) {
  TORCH_CHECK(r.dim() == 2 && r.size(1) == 3, "pair_gaussian_basis: r must be (P, 3)");
  TORCH_CHECK(centers.dim() == 1 && centers.scalar_type() == r.scalar_type(),
              "pair_gaussian_basis: centers must be (K,) in r's dtype");
  TORCH_CHECK(coeff.numel() == 1, "pair_gaussian_basis: coeff must be one number");
}

// pairs [begin, end) of pair_gaussian_basis_forward; plain arguments, so that the
// k loop sees no aliasing through a lambda's captures and is vectorised
template <typename scalar_t>
void gaussian_rows(const scalar_t* __restrict rp, const scalar_t* __restrict cp,
                   scalar_t* __restrict up, scalar_t* __restrict bp, int64_t begin, int64_t end,
                   int64_t K, scalar_t c, scalar_t rc, scalar_t w) {
  const scalar_t floor = static_cast<scalar_t>(kGaussianFloor);
  for (int64_t p = begin; p < end; ++p) {
    const scalar_t x0 = rp[3 * p], x1 = rp[3 * p + 1], x2 = rp[3 * p + 2];
    const scalar_t d = std::sqrt(x0 * x0 + x1 * x1 + x2 * x2);
    up[3 * p] = x0 / d; up[3 * p + 1] = x1 / d; up[3 * p + 2] = x2 / d;
    const scalar_t fc = d < rc ? scalar_t(0.5) * (std::cos(d * w) + scalar_t(1)) : scalar_t(0);
    scalar_t* __restrict b = bp + p * (K + 1);
#pragma omp simd
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t t = d - cp[k];
      b[k] = exp_vec(std::max(c * (t * t), floor)) * fc;
    }
    b[K] = fc;
  }
}

// the gradient for r of pairs [begin, end) (see gaussian_rows)
template <typename scalar_t>
void gaussian_rows_backward(const scalar_t* __restrict rp, const scalar_t* __restrict cp,
                            const scalar_t* __restrict gup, const scalar_t* __restrict gbp,
                            scalar_t* __restrict grp, int64_t begin, int64_t end, int64_t K,
                            scalar_t c, scalar_t rc, scalar_t w) {
  const scalar_t floor = static_cast<scalar_t>(kGaussianFloor);
  for (int64_t p = begin; p < end; ++p) {
    const scalar_t x0 = rp[3 * p], x1 = rp[3 * p + 1], x2 = rp[3 * p + 2];
    const scalar_t d = std::sqrt(x0 * x0 + x1 * x1 + x2 * x2);
    const scalar_t u0 = x0 / d, u1 = x1 / d, u2 = x2 / d;
    const bool below = d < rc;
    const scalar_t fc = below ? scalar_t(0.5) * (std::cos(d * w) + scalar_t(1)) : scalar_t(0);
    const scalar_t dfc = below ? scalar_t(-0.5) * w * std::sin(d * w) : scalar_t(0);
    const scalar_t* __restrict gb = gbp + p * (K + 1);
    scalar_t g_d = 0;
#pragma omp simd reduction(+ : g_d)
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t t = d - cp[k];
      const scalar_t e = c * (t * t);
      const scalar_t g = exp_vec(std::max(e, floor));
      const scalar_t dg = e >= floor ? scalar_t(2) * c * t * g : scalar_t(0);
      g_d += gb[k] * (dg * fc + g * dfc);
    }
    g_d += gb[K] * dfc;
    const scalar_t* gu = gup + 3 * p;
    const scalar_t s = gu[0] * u0 + gu[1] * u1 + gu[2] * u2;
    grp[3 * p] = g_d * u0 + (gu[0] - s * u0) / d;
    grp[3 * p + 1] = g_d * u1 + (gu[1] - s * u1) / d;
    grp[3 * p + 2] = g_d * u2 + (gu[2] - s * u2) / d;
  }
}

}  // namespace

std::vector<torch::Tensor> pair_gaussian_basis_forward(torch::Tensor r, torch::Tensor centers,
                                                       torch::Tensor coeff, double cutoff) {
  check_geometry(r, centers, coeff);
  r = r.contiguous(); centers = centers.contiguous();
  const int64_t P = r.size(0), K = centers.size(0);
  auto u = torch::empty({P, 3}, r.options());
  auto basis = torch::empty({P, K + 1}, r.options());
  const double co = coeff.item<double>();
  dispatch_float(r.scalar_type(), "pair_gaussian_basis", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict rp = r.data_ptr<scalar_t>();
    const scalar_t* __restrict cp = centers.data_ptr<scalar_t>();
    scalar_t* __restrict up = u.data_ptr<scalar_t>();
    scalar_t* __restrict bp = basis.data_ptr<scalar_t>();
    const scalar_t c = static_cast<scalar_t>(co), rc = static_cast<scalar_t>(cutoff);
    const scalar_t w = static_cast<scalar_t>(M_PI / cutoff);
    at::parallel_for(0, P, 4 * kPairGrain, [&](int64_t begin, int64_t end) {
      gaussian_rows(rp, cp, up, bp, begin, end, K, c, rc, w);
    });
  });
  return {u, basis};
}

// the gradient for r given those of u (P, 3) and basis (P, K + 1); dg_k/dd is zero
// where the floor holds g_k (as autograd has the clamp)
torch::Tensor pair_gaussian_basis_backward(torch::Tensor g_u, torch::Tensor g_basis,
                                           torch::Tensor r, torch::Tensor centers,
                                           torch::Tensor coeff, double cutoff) {
  check_geometry(r, centers, coeff);
  const int64_t P = r.size(0), K = centers.size(0);
  TORCH_CHECK(g_u.sizes() == r.sizes() && g_basis.dim() == 2 && g_basis.size(0) == P &&
              g_basis.size(1) == K + 1 && g_u.scalar_type() == r.scalar_type() &&
              g_basis.scalar_type() == r.scalar_type(), "pair_gaussian_basis_backward: shapes");
  r = r.contiguous(); centers = centers.contiguous();
  g_u = g_u.contiguous(); g_basis = g_basis.contiguous();
  auto g_r = torch::empty({P, 3}, r.options());
  const double co = coeff.item<double>();
  dispatch_float(r.scalar_type(), "pair_gaussian_basis_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict rp = r.data_ptr<scalar_t>();
    const scalar_t* __restrict cp = centers.data_ptr<scalar_t>();
    const scalar_t* __restrict gup = g_u.data_ptr<scalar_t>();
    const scalar_t* __restrict gbp = g_basis.data_ptr<scalar_t>();
    scalar_t* __restrict grp = g_r.data_ptr<scalar_t>();
    const scalar_t c = static_cast<scalar_t>(co), rc = static_cast<scalar_t>(cutoff);
    const scalar_t w = static_cast<scalar_t>(M_PI / cutoff);
    at::parallel_for(0, P, 4 * kPairGrain, [&](int64_t begin, int64_t end) {
      gaussian_rows_backward(rp, cp, gup, gbp, grp, begin, end, K, c, rc, w);
    });
  });
  return g_r;
}

// ---------------------------------------------------------------------------
// PaiNN's update block, its element-wise parts (the channel mix and the context
// network around them are matrix products). With V = mu_vw[..., :F] and
// W = mu_vw[..., F:] (the channel mix of mu, (N, 3, 2F)):
//   update_norms:  h = [q | sqrt(sum_c V_c^2 + eps)]                    (N, 2F)
//   update_apply:  q' = q + (a_ss + a_sv * sum_c V_c W_c),  mu' = mu + a_vv W
//                  with [a_vv | a_sv | a_ss] = ctx (N, 3F)
// One pass over each atom's rows instead of a dozen torch element-wise ops
// (each a full read and write of (N, 3, F) tensors).

torch::Tensor painn_update_norms_forward(torch::Tensor q, torch::Tensor mu_vw, double eps) {
  const int64_t N = q.size(0), F = q.size(1);
  TORCH_CHECK(mu_vw.dim() == 3 && mu_vw.size(0) == N && mu_vw.size(1) == 3 &&
              mu_vw.size(2) == 2 * F && mu_vw.scalar_type() == q.scalar_type(),
              "painn_update_norms: shapes");
  q = q.contiguous(); mu_vw = mu_vw.contiguous();
  auto h = torch::empty({N, 2 * F}, q.options());
  dispatch_float(q.scalar_type(), "painn_update_norms", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict qp = q.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu_vw.data_ptr<scalar_t>();
    scalar_t* __restrict hp = h.data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* __restrict v = mp + i * 6 * F;
        const scalar_t* __restrict qi = qp + i * F;
        scalar_t* __restrict hi = hp + i * 2 * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {
          hi[f] = qi[f];
          const scalar_t v0 = v[f], v1 = v[2 * F + f], v2 = v[4 * F + f];
          hi[F + f] = std::sqrt(v0 * v0 + v1 * v1 + v2 * v2 + e);
        }
      }
    });
  });
  return h;
}

// gradients for q and mu_vw given gh; the norms come from h (the forward's output)
std::vector<torch::Tensor> painn_update_norms_backward(torch::Tensor gh, torch::Tensor mu_vw,
                                                       torch::Tensor h) {
  const int64_t N = h.size(0), F = h.size(1) / 2;
  gh = gh.contiguous(); mu_vw = mu_vw.contiguous(); h = h.contiguous();
  auto gq = torch::empty({N, F}, h.options());
  auto gm = torch::empty({N, 3, 2 * F}, h.options());
  dispatch_float(h.scalar_type(), "painn_update_norms_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict ghp = gh.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu_vw.data_ptr<scalar_t>();
    const scalar_t* __restrict hp = h.data_ptr<scalar_t>();
    scalar_t* __restrict gqp = gq.data_ptr<scalar_t>();
    scalar_t* __restrict gmp = gm.data_ptr<scalar_t>();
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* __restrict g = ghp + i * 2 * F;
        const scalar_t* __restrict v = mp + i * 6 * F;
        const scalar_t* __restrict n = hp + i * 2 * F + F;
        scalar_t* __restrict gv = gmp + i * 6 * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {
          gqp[i * F + f] = g[f];
          const scalar_t r = g[F + f] / n[f];
          for (int c = 0; c < 3; ++c) {
            gv[2 * c * F + f] = r * v[2 * c * F + f];
            gv[2 * c * F + F + f] = 0;
          }
        }
      }
    });
  });
  return {gq, gm};
}

std::vector<torch::Tensor> painn_update_apply_forward(torch::Tensor q, torch::Tensor mu,
                                                      torch::Tensor mu_vw, torch::Tensor ctx) {
  const int64_t N = q.size(0), F = q.size(1);
  TORCH_CHECK(mu.dim() == 3 && mu.size(0) == N && mu.size(1) == 3 && mu.size(2) == F &&
              mu_vw.dim() == 3 && mu_vw.size(0) == N && mu_vw.size(1) == 3 &&
              mu_vw.size(2) == 2 * F && ctx.dim() == 2 && ctx.size(0) == N &&
              ctx.size(1) == 3 * F, "painn_update_apply: shapes");
  TORCH_CHECK(mu.scalar_type() == q.scalar_type() && mu_vw.scalar_type() == q.scalar_type() &&
              ctx.scalar_type() == q.scalar_type(), "painn_update_apply: one dtype expected");
  q = q.contiguous(); mu = mu.contiguous(); mu_vw = mu_vw.contiguous(); ctx = ctx.contiguous();
  auto qo = torch::empty_like(q);
  auto mo = torch::empty_like(mu);
  dispatch_float(q.scalar_type(), "painn_update_apply", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict qp = q.data_ptr<scalar_t>();
    const scalar_t* __restrict mup = mu.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu_vw.data_ptr<scalar_t>();
    const scalar_t* __restrict cp = ctx.data_ptr<scalar_t>();
    scalar_t* __restrict qop = qo.data_ptr<scalar_t>();
    scalar_t* __restrict mop = mo.data_ptr<scalar_t>();
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* __restrict m = mp + i * 6 * F;
        const scalar_t* __restrict a = cp + i * 3 * F;  // a_vv | a_sv | a_ss
        const scalar_t* __restrict mi = mup + i * 3 * F;
        scalar_t* __restrict o = mop + i * 3 * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {
          scalar_t s = 0;
          for (int c = 0; c < 3; ++c) s += m[2 * c * F + f] * m[2 * c * F + F + f];
          qop[i * F + f] = qp[i * F + f] + (a[2 * F + f] + a[F + f] * s);
          for (int c = 0; c < 3; ++c) o[c * F + f] = mi[c * F + f] + a[f] * m[2 * c * F + F + f];
        }
      }
    });
  });
  return {qo, mo};
}

// gradients for mu_vw and ctx given those of q' and mu' (those for q and mu are
// the incoming ones themselves)
std::vector<torch::Tensor> painn_update_apply_backward(torch::Tensor gqo, torch::Tensor gmo,
                                                       torch::Tensor mu_vw, torch::Tensor ctx) {
  const int64_t N = gqo.size(0), F = gqo.size(1);
  gqo = gqo.contiguous(); gmo = gmo.contiguous(); mu_vw = mu_vw.contiguous();
  ctx = ctx.contiguous();
  auto gm = torch::empty_like(mu_vw);
  auto gc = torch::empty_like(ctx);
  dispatch_float(gqo.scalar_type(), "painn_update_apply_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* __restrict gqp = gqo.data_ptr<scalar_t>();
    const scalar_t* __restrict gop = gmo.data_ptr<scalar_t>();
    const scalar_t* __restrict mp = mu_vw.data_ptr<scalar_t>();
    const scalar_t* __restrict cp = ctx.data_ptr<scalar_t>();
    scalar_t* __restrict gmp = gm.data_ptr<scalar_t>();
    scalar_t* __restrict gcp = gc.data_ptr<scalar_t>();
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* __restrict m = mp + i * 6 * F;
        const scalar_t* __restrict a = cp + i * 3 * F;
        const scalar_t* __restrict go = gop + i * 3 * F;
        const scalar_t* __restrict gq = gqp + i * F;
        scalar_t* __restrict gv = gmp + i * 6 * F;
        scalar_t* __restrict ga = gcp + i * 3 * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {
          scalar_t s = 0, gvv = 0;
          const scalar_t gs = gq[f] * a[F + f];  // gradient of sum_c V_c W_c
          for (int c = 0; c < 3; ++c) {
            const scalar_t v = m[2 * c * F + f], w = m[2 * c * F + F + f];
            s += v * w;
            gvv += go[c * F + f] * w;
            gv[2 * c * F + f] = gs * w;
            gv[2 * c * F + F + f] = gs * v + a[f] * go[c * F + f];
          }
          ga[f] = gvv;
          ga[F + f] = gq[f] * s;
          ga[2 * F + f] = gq[f];
        }
      }
    });
  });
  return {gm, gc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pair_gaussian_basis_forward", &pair_gaussian_basis_forward,
        "unit vectors and [Gaussians x cosine cutoff | cutoff] of pair vectors");
  m.def("pair_gaussian_basis_backward", &pair_gaussian_basis_backward,
        "gradient of pair_gaussian_basis_forward for the pair vectors");
  m.def("half_graph", &half_graph, "directed edges of a half list grouped by centre (counting sort)");
  m.def("cfconv_forward", &cfconv_forward, "SchNet cfconv forward (half list)");
  m.def("pair_product", &pair_product, "g_a x_b + g_b x_a for every pair (half list)");
  m.def("cfconv_backward", &cfconv_backward, "cfconv's backward: (cfconv(g, W), pair_product(g, x))");
  m.def("painn_message_forward", &painn_message_forward, "PaiNN message forward (half list)");
  m.def("painn_message_backward", &painn_message_backward, "PaiNN message backward (half list)");
  m.def("painn_update_norms_forward", &painn_update_norms_forward, "PaiNN update: [q | |V|]");
  m.def("painn_update_norms_backward", &painn_update_norms_backward, "its backward");
  m.def("painn_update_apply_forward", &painn_update_apply_forward, "PaiNN update: q', mu'");
  m.def("painn_update_apply_backward", &painn_update_apply_backward, "its backward");
  m.def("set_direct_blas",
        [](bool on) { const bool old = use_blas; use_blas = on; return old; },
        "call the BLAS directly in the filter kernels (else at::mm_out); returns the old setting");
  m.def("direct_blas_available", &blas_available, "whether sgemm_/dgemm_ were found");
  m.def("set_pair_tile_bytes",
        [](int64_t bytes) { const int64_t old = pair_tile_bytes; pair_tile_bytes = bytes; return old; },
        "size of the filter message's pair tiles in bytes (benchmarks, tests); returns the old one");
  m.def("painn_filter_message_forward", &painn_filter_message_forward,
        "PaiNN message with the filter basis_p Wt built per edge (half list)");
  m.def("painn_filter_message_backward", &painn_filter_message_backward,
        "backward of painn_filter_message_forward");
}
