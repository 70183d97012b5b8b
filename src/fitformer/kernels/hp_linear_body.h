// The ISA-independent body of the HP CPU kernel. hp_linear.cpp includes this file once per
// code path (generic, AVX2, AVX-512), each time inside its own namespace and compiler target
// region, after defining there:
//
//   LANES    floats per vector;  vfloat / vfloat_u  a float vector of LANES (GCC vector
//            extension) and its unaligned twin (for stores into y);
//   VECS     vectors per token tile (TILE = LANES * VECS tokens);
//   ROW_CV   vectors per pass of one row; PAIR_CV  per pass of two rows sharing columns;
//            SHARED_R x SHARED_CV  rows x vectors per pass of rows sharing columns (sized
//            so that accumulators, the broadcast weight and the loads of x_t fit the
//            register file: 32 registers with AVX-512, 16 with AVX2);
//   KEEP_IN_REGISTER(v)  makes the compiler hold v in a register (one load reused);
//   GEMV_TT  tokens per pass of the token-per-row path (its accumulators fit the registers);
//   BLOCK    side of the in-register transposes, with transpose_in(src, ld, dst, ldd) and
//            transpose_out(src, ldd, dst, ld) (BLOCK = 1: scalar copies only).
//
// Nothing here passes a vector by value across a function boundary, so the code of one
// path never meets another path's vector ABI.

constexpr int64_t TILE = LANES * VECS;
constexpr int64_t GV = GROUP / LANES;       // vectors per GEMV row group
static_assert(VECS % ROW_CV == 0 && VECS % PAIR_CV == 0 && VECS % SHARED_CV == 0 &&
                  GROUP % LANES == 0, "layout");

// xt[n][t] = x[t0 + t][n] for t < nt (rows of x have stride N); lanes t >= nt are zero.
template <typename scalar_t>
void load_tile(const scalar_t* x, int64_t N, int64_t t0, int64_t nt, float* xt) {
  const int64_t t_full = BLOCK > 1 ? nt / BLOCK * BLOCK : 0, n_full = N / BLOCK * BLOCK;
  if (t_full > 0)
    for (int64_t t = 0; t < t_full; t += BLOCK)
      for (int64_t n = 0; n < n_full; n += BLOCK)
        transpose_in(x + (t0 + t) * N + n, N, xt + n * TILE + t, TILE);
  for (int64_t t = 0; t < nt; ++t) {              // the edges (all of it with BLOCK = 1)
    const scalar_t* xr = x + (t0 + t) * N;
    for (int64_t n = (t < t_full ? n_full : 0); n < N; ++n) xt[n * TILE + t] = to_float(xr[n]);
  }
  if (nt < TILE)
    for (int64_t n = 0; n < N; ++n)
      std::memset(xt + n * TILE + nt, 0, sizeof(float) * (TILE - nt));
}

// y[t0 + t][o] = yt[o][t] for t < nt and o in [o0, o1).
template <typename scalar_t>
void store_tile(const float* yt, int64_t M, int64_t o0, int64_t o1, int64_t t0, int64_t nt,
                scalar_t* y) {
  const int64_t t_full = BLOCK > 1 ? nt / BLOCK * BLOCK : 0;
  const int64_t o_full = o0 + (o1 - o0) / BLOCK * BLOCK;
  if (t_full > 0)
    for (int64_t t = 0; t < t_full; t += BLOCK)
      for (int64_t o = o0; o < o_full; o += BLOCK)
        transpose_out(yt + o * TILE + t, TILE, y + (t0 + t) * M + o, M);
  for (int64_t t = 0; t < nt; ++t) {
    scalar_t* yr = y + (t0 + t) * M;
    for (int64_t o = (t < t_full ? o_full : o0); o < o1; ++o)
      yr[o] = static_cast<scalar_t>(yt[o * TILE + t]);
  }
}

// Output rows o .. o + R - 1, which keep the same columns c[0..count) (their weights are
// v[i * count + e]), over the tile's vectors [0, p1), CV vectors per pass: a register-blocked
// dense micro-kernel (R x CV accumulators; each load of x_t feeds R multiply-adds).
template <int R, int CV>
inline void shared_rows(const vfloat* xv, vfloat* yv, const int32_t* c, const float* v,
                        int64_t count, const float* bias, int64_t o, int64_t p1) {
  for (int64_t p = 0; p < p1; p += CV) {
    vfloat acc[R][CV];
    for (int i = 0; i < R; ++i) {
      const float b = bias ? bias[o + i] : 0.0f;
      for (int q = 0; q < CV; ++q) acc[i][q] = vfloat{} + b;
    }
    for (int64_t e = 0; e < count; ++e) {
      const vfloat* xc = xv + static_cast<int64_t>(c[e]) * VECS + p;
      vfloat xq[CV];
      for (int q = 0; q < CV; ++q) {
        xq[q] = xc[q];
        KEEP_IN_REGISTER(xq[q]);                    // one load of x_t for R rows
      }
      for (int i = 0; i < R; ++i) {
        const float w = v[i * count + e];
        for (int q = 0; q < CV; ++q) acc[i][q] += w * xq[q];
      }
    }
    for (int i = 0; i < R; ++i)
      for (int q = 0; q < CV; ++q) yv[(o + i) * VECS + p + q] = acc[i][q];
  }
}

// Output row o over the tile's vectors [0, p1).
inline void one_row(const vfloat* xv, vfloat* yv, const int32_t* c, const float* v,
                    int64_t count, float b, int64_t o, int64_t p1) {
  for (int64_t p = 0; p < p1; p += ROW_CV) {
    vfloat a[ROW_CV];
    for (int64_t q = 0; q < ROW_CV; ++q) a[q] = vfloat{} + b;
    for (int64_t e = 0; e < count; ++e) {
      const vfloat* xc = xv + static_cast<int64_t>(c[e]) * VECS + p;
      const float w = v[e];
      for (int64_t q = 0; q < ROW_CV; ++q) a[q] += w * xc[q];
    }
    for (int64_t q = 0; q < ROW_CV; ++q) yv[o * VECS + p + q] = a[q];
  }
}

// Work items [item_begin, item_end) of the tile path: item = tile * row_splits + split.
template <typename scalar_t>
void tile_items(const TileArgs<scalar_t>& a, int64_t item_begin, int64_t item_end) {
  AlignedFloats xt_buf(a.N * TILE), yt_buf(a.M * TILE);   // every lane written before read
  float* xt = xt_buf.get();
  float* yt = yt_buf.get();
  const vfloat* xv = reinterpret_cast<const vfloat*>(xt);
  vfloat* yv = reinterpret_cast<vfloat*>(yt);
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t tile = item / a.row_splits, split = item % a.row_splits;
    const int64_t t0 = tile * TILE;
    const int64_t nt = std::min(TILE, a.T - t0);
    const int64_t j0 = split * a.rows_per_split, j1 = std::min(a.Mb, j0 + a.rows_per_split);
    if (j0 >= j1) continue;
    load_tile(a.x, a.N, t0, nt, xt);
    const int64_t used = (nt + LANES - 1) / LANES;            // vectors holding tokens
    const int64_t pair_p1 = (used + PAIR_CV - 1) / PAIR_CV * PAIR_CV;
    const int64_t shared_p1 = (used + SHARED_CV - 1) / SHARED_CV * SHARED_CV;
    const int64_t row_p1 = (used + ROW_CV - 1) / ROW_CV * ROW_CV;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t count = a.group_ptr[j + 1] - a.group_ptr[j];
      const int64_t row_end = std::min(a.M, (j + 1) * a.r);
      int64_t o = j * a.r;
      if (a.shared[j]) {
        // Every row of this block row keeps the same columns (HP with d2 = 1, cbb,
        // block): a dense block, SHARED_R rows per pass (then pairs) share each x_t load.
        const int32_t* c = a.cols + a.row_base[o];
        for (; o + SHARED_R <= row_end; o += SHARED_R)
          shared_rows<SHARED_R, SHARED_CV>(xv, yv, c, a.values + a.row_base[o], count,
                                           a.bias, o, shared_p1);
        for (; o + 2 <= row_end; o += 2)
          shared_rows<2, PAIR_CV>(xv, yv, c, a.values + a.row_base[o], count, a.bias, o,
                                  pair_p1);
      }
      for (; o < row_end; ++o)
        one_row(xv, yv, a.cols + a.row_base[o], a.values + a.row_base[o], count,
                a.bias ? a.bias[o] : 0.0f, o, row_p1);
    }
    store_tile(yt, a.M, j0 * a.r, std::min(a.M, j1 * a.r), t0, nt, a.y);
  }
}

// GEMV path, row group g for the TT tokens [t0, t0 + TT): outputs in the lanes (GROUP rows),
// one broadcast input value per listed column and token. With fewer than 4 tokens, CH
// independent chains of accumulators (columns e, e + 1, ...) hide the multiply-add latency.
template <typename scalar_t, int TT>
void gemv_pass(const GemvArgs<scalar_t>& a, int64_t t0, int64_t g) {
  constexpr int CH_WANT = TT >= 4 ? 1 : 4 / TT;
  constexpr int CH_FIT = GEMV_TT / TT > 0 ? GEMV_TT / TT : 1;   // accumulators must fit
  constexpr int CH = CH_WANT < CH_FIT ? CH_WANT : CH_FIT;
  vfloat acc[CH][TT][GV];
  for (int64_t v = 0; v < GV; ++v) {
    const vfloat b = a.bias ? *reinterpret_cast<const vfloat*>(a.bias + g * GROUP + v * LANES)
                            : vfloat{};
    for (int t = 0; t < TT; ++t) acc[0][t][v] = b;
    for (int ch = 1; ch < CH; ++ch)
      for (int t = 0; t < TT; ++t) acc[ch][t][v] = vfloat{};
  }
  const float* xp = a.xp + t0;                                  // xp[col * T + t]
  const int64_t e1 = a.gptr[g + 1];
  int64_t e = a.gptr[g];
  for (; e + CH <= e1; e += CH) {
    for (int ch = 0; ch < CH; ++ch) {
      const vfloat* w = reinterpret_cast<const vfloat*>(a.gvals + (e + ch) * GROUP);
      const float* xc = xp + static_cast<int64_t>(a.gcols[e + ch]) * a.T;
      for (int t = 0; t < TT; ++t) {
        const float xs = xc[t];
        for (int64_t v = 0; v < GV; ++v) acc[ch][t][v] += w[v] * xs;
      }
    }
  }
  for (; e < e1; ++e) {
    const vfloat* w = reinterpret_cast<const vfloat*>(a.gvals + e * GROUP);
    const float* xc = xp + static_cast<int64_t>(a.gcols[e]) * a.T;
    for (int t = 0; t < TT; ++t) {
      const float xs = xc[t];
      for (int64_t v = 0; v < GV; ++v) acc[0][t][v] += w[v] * xs;
    }
  }
  for (int ch = 1; ch < CH; ++ch)
    for (int t = 0; t < TT; ++t)
      for (int64_t v = 0; v < GV; ++v) acc[0][t][v] += acc[ch][t][v];
  const int64_t o0 = g * GROUP, rows = std::min<int64_t>(GROUP, a.M - o0);
  for (int t = 0; t < TT; ++t) {
    scalar_t* yr = a.y + (t0 + t) * a.M + o0;
    if (std::is_same<scalar_t, float>::value && rows == GROUP) {   // straight to y
      for (int64_t v = 0; v < GV; ++v)
        *reinterpret_cast<vfloat_u*>(reinterpret_cast<float*>(yr) + v * LANES) = acc[0][t][v];
    } else {
      alignas(64) float out[GROUP];
      for (int64_t v = 0; v < GV; ++v)
        *reinterpret_cast<vfloat*>(out + v * LANES) = acc[0][t][v];
      for (int64_t i = 0; i < rows; ++i) yr[i] = static_cast<scalar_t>(out[i]);
    }
  }
}

template <typename scalar_t, int TT>
void gemv_tail(const GemvArgs<scalar_t>& a, int64_t t0, int64_t tt, int64_t g) {
  if constexpr (TT >= 1) {
    if (tt == TT) gemv_pass<scalar_t, TT>(a, t0, g);
    else gemv_tail<scalar_t, TT - 1>(a, t0, tt, g);
  }
}

// Row groups [g0, g1) for every token, GEMV_TT tokens per pass; the passes of one group run
// back to back, so its weights are read from memory once and then from the cache.
template <typename scalar_t>
void gemv_groups(const GemvArgs<scalar_t>& a, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    int64_t t0 = 0;
    for (; t0 + GEMV_TT <= a.T; t0 += GEMV_TT) gemv_pass<scalar_t, GEMV_TT>(a, t0, g);
    if (t0 < a.T) gemv_tail<scalar_t, GEMV_TT - 1>(a, t0, a.T - t0, g);
  }
}

template void tile_items<float>(const TileArgs<float>&, int64_t, int64_t);
template void tile_items<c10::BFloat16>(const TileArgs<c10::BFloat16>&, int64_t, int64_t);
template void gemv_groups<float>(const GemvArgs<float>&, int64_t, int64_t);
template void gemv_groups<c10::BFloat16>(const GemvArgs<c10::BFloat16>&, int64_t, int64_t);
