// Token divergences between student (q) and teacher (p) rows on CPU. Forward keeps each row's exponentials
// from the log-sum-exp pass, so every element costs one exp per input (plus one log for JSD).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "op_args.h"
#include "cpu/row_math.h"

namespace posttrain::cpu {

namespace {

int64_t grain_rows(int64_t V) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(V, 1)); }

template <typename A>
using Vec = at::vec::Vectorized<A>;

// Zero where mask (p == 0 or q == 0): 0 * log 0 contributes nothing.
template <typename A>
inline Vec<A> zero_where(const Vec<A>& x, const Vec<A>& mask) {
  return Vec<A>::blendv(x, Vec<A>(A(0)), mask);
}

template <typename A>
inline Vec<A> half_sign(const Vec<A>& q, const Vec<A>& p) {
  auto s = Vec<A>::blendv(Vec<A>(A(-0.5)), Vec<A>(A(0.5)), q > p);
  return Vec<A>::blendv(s, Vec<A>(A(0)), q == p);
}

template <DivKind K, typename scalar_t>
void forward_rows(const scalar_t* S, const scalar_t* T, int64_t N, int64_t V, double beta_d, double temp, acc_t<scalar_t>* div,
                  acc_t<scalar_t>* lse_s, acc_t<scalar_t>* lse_t, acc_t<scalar_t>* aux) {
  using A = acc_t<scalar_t>;
  const A inv_t = A(1.0 / temp), beta = A(beta_d), omb = A(1) - beta;
  at::parallel_for(0, N, grain_rows(V), [&](int64_t begin, int64_t end) {
    const int64_t nt = num_tiles(V);
    std::vector<A> es(V), et(V), ms(nt), mt(nt), bs(kTile), bt(kTile);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* srow = S + r * V;
      const scalar_t* trow = T + r * V;
      const A ls = row_lse<scalar_t, A>(srow, V, inv_t, nullptr, es.data(), ms.data());
      const A lt = row_lse<scalar_t, A>(trow, V, inv_t, nullptr, et.data(), mt.data());
      lse_s[r] = ls;
      lse_t[r] = lt;
      Vec<A> acc(A(0)), acc_aux(A(0));
      A sum = 0, sum_aux = 0;
      for (int64_t t0 = 0, t = 0; t0 < V; t0 += kTile, ++t) {
        const int64_t len = std::min(kTile, V - t0);
        load_scaled<scalar_t, A>(srow + t0, bs.data(), len, inv_t);
        load_scaled<scalar_t, A>(trow + t0, bt.data(), len, inv_t);
        const A sq = std::exp(ms[t] - ls), sp = std::exp(mt[t] - lt);
        // one body for the vector lanes and the scalar tail: Vec<A> of width 1 is not available, so the
        // tail loads a partial vector and masks the lanes past len out of the sums
        for (int64_t i = 0; i < len; i += Vec<A>::size()) {
          const int64_t cnt = std::min<int64_t>(Vec<A>::size(), len - i);
          const Vec<A> q = Vec<A>::loadu(es.data() + t0 + i, cnt) * Vec<A>(sq);
          const Vec<A> p = Vec<A>::loadu(et.data() + t0 + i, cnt) * Vec<A>(sp);
          const Vec<A> lq = Vec<A>::loadu(bs.data() + i, cnt) - Vec<A>(ls);
          const Vec<A> lp = Vec<A>::loadu(bt.data() + i, cnt) - Vec<A>(lt);
          const Vec<A> zero(A(0));
          Vec<A> term, term_aux(A(0));
          if constexpr (K == DivKind::kForwardKL) {
            term = zero_where(p * (lp - lq), p == zero);
          } else if constexpr (K == DivKind::kReverseKL) {
            term = zero_where(q * (lq - lp), q == zero);
          } else if constexpr (K == DivKind::kJSD) {
            const Vec<A> lm = (Vec<A>(beta) * p + Vec<A>(omb) * q).log();
            const Vec<A> kq = zero_where(q * (lq - lm), q == zero);
            term = Vec<A>(beta) * zero_where(p * (lp - lm), p == zero) + Vec<A>(omb) * kq;
            term_aux = kq;
          } else {
            term = (q - p).abs() * Vec<A>(A(0.5));
            term_aux = q * half_sign(q, p);
          }
          if (cnt == Vec<A>::size()) {
            acc += term;
            acc_aux += term_aux;
          } else {
            A tmp[Vec<A>::size()], tmp_aux[Vec<A>::size()];
            term.store(tmp);
            term_aux.store(tmp_aux);
            for (int64_t j = 0; j < cnt; ++j) {
              sum += tmp[j];
              sum_aux += tmp_aux[j];
            }
          }
        }
      }
      auto add = [](Vec<A>& a, Vec<A>& b) { return a + b; };
      div[r] = sum + at::vec::vec_reduce_all<A>(add, acc);
      const A a = sum_aux + at::vec::vec_reduce_all<A>(add, acc_aux);
      aux[r] = K == DivKind::kReverseKL ? div[r] : (K == DivKind::kJSD ? a : (K == DivKind::kTVD ? a : A(0)));
    }
  });
}

template <DivKind K, typename scalar_t>
void backward_rows(const acc_t<scalar_t>* G, const scalar_t* S, const scalar_t* T, int64_t N, int64_t V, double beta_d,
                   double temp, const acc_t<scalar_t>* lse_s, const acc_t<scalar_t>* lse_t, const acc_t<scalar_t>* aux,
                   scalar_t* out) {
  using A = acc_t<scalar_t>;
  const A inv_t = A(1.0 / temp), beta = A(beta_d), omb = A(1) - beta;
  at::parallel_for(0, N, grain_rows(V), [&](int64_t begin, int64_t end) {
    std::vector<A> bs(kTile), bt(kTile);
    for (int64_t r = begin; r < end; ++r) {
      const A scale = G[r] * inv_t;
      const Vec<A> vls(lse_s[r]), vlt(lse_t[r]), vaux(aux[r]), zero(A(0));
      for (int64_t t0 = 0; t0 < V; t0 += kTile) {
        const int64_t len = std::min(kTile, V - t0);
        load_scaled<scalar_t, A>(S + r * V + t0, bs.data(), len, inv_t);
        load_scaled<scalar_t, A>(T + r * V + t0, bt.data(), len, inv_t);
        for (int64_t i = 0; i < len; i += Vec<A>::size()) {
          const int64_t cnt = std::min<int64_t>(Vec<A>::size(), len - i);
          const Vec<A> lq = Vec<A>::loadu(bs.data() + i, cnt) - vls;
          const Vec<A> lp = Vec<A>::loadu(bt.data() + i, cnt) - vlt;
          const Vec<A> q = lq.exp(), p = lp.exp();
          Vec<A> dz;
          if constexpr (K == DivKind::kForwardKL) {
            dz = q - p;
          } else if constexpr (K == DivKind::kReverseKL) {
            dz = zero_where(q * (lq - lp - vaux), q == zero);
          } else if constexpr (K == DivKind::kJSD) {
            const Vec<A> lm = (Vec<A>(beta) * p + Vec<A>(omb) * q).log();
            dz = Vec<A>(omb) * zero_where(q * (lq - lm - vaux), q == zero);
          } else {
            dz = q * (half_sign(q, p) - vaux);
          }
          (dz * Vec<A>(scale)).store(bs.data() + i, cnt);
        }
        store_from_acc<scalar_t, A>(bs.data(), out + r * V + t0, len);
      }
    }
  });
}


}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> token_divergence_cpu(const at::Tensor& student_in,
                                                                                const at::Tensor& teacher_in,
                                                                                c10::string_view kind_s, double beta,
                                                                                double temperature) {
  check_divergence_args(student_in, teacher_in, beta, temperature, at::kCPU);
  const DivKind kind = parse_divergence_kind(kind_s);
  const auto student = student_in.contiguous();
  const auto teacher = teacher_in.contiguous();
  const int64_t N = student.size(0), V = student.size(1);
  const auto opts = student.options().dtype(student.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  auto div = at::empty({N}, opts), ls = at::empty({N}, opts), lt = at::empty({N}, opts), aux = at::empty({N}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, student.scalar_type(), "token_divergence_cpu", [&] {
    using A = acc_t<scalar_t>;
    auto args = std::make_tuple(student.const_data_ptr<scalar_t>(), teacher.const_data_ptr<scalar_t>(), N, V, beta,
                                temperature, div.data_ptr<A>(), ls.data_ptr<A>(), lt.data_ptr<A>(), aux.data_ptr<A>());
    switch (kind) {
      case DivKind::kForwardKL: std::apply(forward_rows<DivKind::kForwardKL, scalar_t>, args); break;
      case DivKind::kReverseKL: std::apply(forward_rows<DivKind::kReverseKL, scalar_t>, args); break;
      case DivKind::kJSD: std::apply(forward_rows<DivKind::kJSD, scalar_t>, args); break;
      case DivKind::kTVD: std::apply(forward_rows<DivKind::kTVD, scalar_t>, args); break;
    }
  });
  return {div, ls, lt, aux};
}

at::Tensor token_divergence_backward_cpu(const at::Tensor& grad, const at::Tensor& student_in,
                                         const at::Tensor& teacher_in, const at::Tensor& lse_s_in,
                                         const at::Tensor& lse_t_in, const at::Tensor& aux_in, c10::string_view kind_s,
                                         double beta, double temperature) {
  check_divergence_args(student_in, teacher_in, beta, temperature, at::kCPU);
  const DivKind kind = parse_divergence_kind(kind_s);
  const int64_t N = student_in.size(0), V = student_in.size(1);
  const auto acc = student_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  for (auto* t : {&grad, &lse_s_in, &lse_t_in, &aux_in}) {
    PT_CHECK_DIM(*t, 1, "grad/lse/aux");
    PT_CHECK_SIZE(*t, 0, N, "grad/lse/aux");
  }
  const auto student = student_in.contiguous(), teacher = teacher_in.contiguous();
  const auto g = grad.to(acc).contiguous(), ls = lse_s_in.to(acc).contiguous(), lt = lse_t_in.to(acc).contiguous(),
             aux = aux_in.to(acc).contiguous();
  auto out = at::empty({N, V}, student.options());
  advise_huge_pages(out.data_ptr(), out.nbytes());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, student.scalar_type(), "token_divergence_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    auto args = std::make_tuple(g.const_data_ptr<A>(), student.const_data_ptr<scalar_t>(),
                                teacher.const_data_ptr<scalar_t>(), N, V, beta, temperature, ls.const_data_ptr<A>(),
                                lt.const_data_ptr<A>(), aux.const_data_ptr<A>(), out.data_ptr<scalar_t>());
    switch (kind) {
      case DivKind::kForwardKL: std::apply(backward_rows<DivKind::kForwardKL, scalar_t>, args); break;
      case DivKind::kReverseKL: std::apply(backward_rows<DivKind::kReverseKL, scalar_t>, args); break;
      case DivKind::kJSD: std::apply(backward_rows<DivKind::kJSD, scalar_t>, args); break;
      case DivKind::kTVD: std::apply(backward_rows<DivKind::kTVD, scalar_t>, args); break;
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(posttrain, CPU, m) {
  m.impl("token_divergence", &token_divergence_cpu);
  m.impl("token_divergence_backward", &token_divergence_backward_cpu);
}

}  // namespace posttrain::cpu
